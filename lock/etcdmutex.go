package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/queue"
)

// NewEtcdMutex returns a Mutex that queues in the key layout of etcd's
// concurrency.Mutex (and of "etcdctl lock") for prefix: one key
// "<prefix>/<lease ID in hex>" per waiter, on its lease, ordered by create
// revision. etcdlock Mutexes, concurrency.NewMutex(session, prefix) and
// "etcdctl lock prefix" on the same prefix then exclude each other and are
// granted in the order they asked, so that a fleet can move to etcdlock one
// process at a time. It does no I/O.
//
// The Mutex keeps its early loss, guarded Unlock, fencing tokens (the key's
// create revision) and stall-free handoff; release requests live under
// the namespace (WithNamespace) as usual. What the mixed fleet loses is
// listed in the README ("Moving from etcd's concurrency.Mutex"): etcd's
// side still waits on a watch from a past revision (up to 100 ms per
// handoff), unlocks without a guard and does not see release requests;
// there is one key per lease and name, so the Mutex lets one of its Lock
// calls at a time wait (the others wait in-process, in no set order), and
// a session (WithSession) must not be shared with an etcd Mutex of the same
// prefix. WithMinHold, WithLockDelay and use in a MultiLock are refused
// (ErrInvalidOption).
func NewEtcdMutex(cli *clientv3.Client, prefix string, options ...Option) (*Mutex, error) {
	m, err := NewMutex(cli, prefix, options...)
	if err != nil {
		return nil, err
	}
	if m.p.Cfg.MinHold > 0 {
		_ = m.Close()
		return nil, fmt.Errorf("%w: a minimum hold moves the key to another lease, which etcd's layout cannot name", ErrInvalidOption)
	}
	if m.p.Cfg.LockDelay > 0 {
		_ = m.Close()
		return nil, fmt.Errorf("%w: lock-delay in etcd's layout (etcd's Mutex marks no clean release)", ErrInvalidOption)
	}
	if strings.HasPrefix(m.p.Q.Namespace, prefix+"/") {
		_ = m.Close()
		return nil, fmt.Errorf("%w: namespace %q is under the lock's prefix %q", ErrInvalidOption, m.p.Q.Namespace, prefix+"/")
	}
	m.p.Q.Prefix = prefix + "/"
	m.p.Q.Slots = nil
	m.p.Q.KeyName = queue.EtcdKey
	m.gate = make(chan struct{}, 1)
	return m, nil
}

// gated acquires for a Mutex in etcd's layout: it first takes the Mutex's
// gate (see NewEtcdMutex), which it gives back when the acquire fails or
// the hold ends: at the end of its Unlock, or once it is lost.
func (m *Mutex) gated(ctx context.Context, mode queue.Mode) (*Hold, error) {
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	if mode == queue.Try {
		select {
		case m.gate <- struct{}{}:
		default:
			return nil, ErrLocked // another Lock call of this Mutex holds or waits
		}
	} else {
		select {
		case m.gate <- struct{}{}:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-m.p.CloseContext().Done():
			return nil, ErrClosed
		}
	}
	h, err := m.p.Acquire(ctx, &m.p.Q, queue.Request{Mode: mode})
	if err != nil {
		<-m.gate
		return nil, err
	}
	hold := newHold(m.p, h)
	var once sync.Once
	open := func() { once.Do(func() { <-m.gate }) }
	hold.ended = open
	// A lost hold's key is gone (or being deleted by the keeper); an
	// unlocked one opens the gate when its Unlock returns, after its Txn.
	context.AfterFunc(h.Context(), func() {
		if !errors.Is(context.Cause(h.Context()), ErrReleased) {
			open()
		}
	})
	return hold, nil
}

// etcdLayout reports whether m queues in etcd's layout (NewEtcdMutex).
func (m *Mutex) etcdLayout() bool { return m.gate != nil }

// mutexOnly refuses, for a primitive other than a Mutex, the options that
// only a Mutex takes, and closes p.
func mutexOnly(p *queue.Primitive) error {
	if p.Cfg.LockDelay > 0 {
		_ = p.Close()
		return fmt.Errorf("%w: lock-delay is for a Mutex only", ErrInvalidOption)
	}
	return nil
}
