package lock

import (
	"context"
	"errors"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// Mutex is a fair distributed mutual-exclusion lock. Waiters are granted the
// lock in the order they asked (the order of their keys' create revisions).
//
// A Mutex is safe for concurrent use: each Lock call is its own waiter, and
// two holds through one Mutex (or one session) exclude each other like any
// two holders. Close it when done.
type Mutex struct {
	p    *queue.Primitive
	name string
	// gate, for a Mutex in etcd's layout (NewEtcdMutex), lets one of its
	// Lock calls at a time have a key: the key's name is its lease's.
	gate chan struct{}
}

// NewMutex returns the mutex called name on cli. It does no I/O.
func NewMutex(cli *clientv3.Client, name string, options ...Option) (*Mutex, error) {
	p, err := queue.NewPrimitive(cli, string(KindMutex), name, queue.Exclusive{}, queue.KeyWatches, opts(options), public)
	if err != nil {
		return nil, err
	}
	if d := p.Cfg.LockDelay; d > 0 {
		p.Q.SetLockDelay(d)
	}
	return &Mutex{p: p, name: name}, nil
}

// Lock blocks until the lock is held, and returns the hold; its errors are
// an acquire's (see the package doc). Uncontended it costs one round trip
// (plus a lease grant the first time); after a Lock that found the lock
// free, one more when the lock is held by then.
func (m *Mutex) Lock(ctx context.Context) (*Hold, error) {
	if m.gate != nil {
		return m.gated(ctx, queue.Wait)
	}
	h, err := m.p.Acquire(ctx, &m.p.Q, queue.Request{Mode: queue.Wait})
	if err != nil {
		return nil, err
	}
	return newHold(m.p, h), nil
}

// TryLock takes the lock if nobody holds or waits for it, in one round
// trip, and returns ErrLocked at once otherwise: ErrHeldBySelf (which
// matches ErrLocked) when a hold of this Mutex holds it.
func (m *Mutex) TryLock(ctx context.Context) (*Hold, error) {
	if m.gate != nil {
		return m.gated(ctx, queue.Try)
	}
	h, err := m.p.Acquire(ctx, &m.p.Q, queue.Request{Mode: queue.Try})
	if err != nil {
		if errors.Is(err, ErrLocked) && m.p.Holding() {
			// The lock is exclusive: a live hold of this Mutex is what
			// refused the try. No I/O.
			return nil, ErrHeldBySelf
		}
		return nil, err
	}
	return newHold(m.p, h), nil
}

// Do locks, runs fn with the hold's token and a context cancelled when the
// hold is lost (or ctx ends), then unlocks on a context of its own bounded
// by 5 s. It returns Lock's error, or fn's joined with Unlock's, matching
// ErrLost if the hold was lost while fn ran.
func (m *Mutex) Do(ctx context.Context, fn func(ctx context.Context, token fencing.Token) error) error {
	h, err := m.Lock(ctx)
	if err != nil {
		return err
	}
	return h.run(ctx, fn)
}

// Name returns the mutex's name.
func (m *Mutex) Name() string { return m.name }

// Prefix returns the etcd key prefix of the mutex's queue.
func (m *Mutex) Prefix() string { return m.p.Q.Prefix }

// Close ends the Mutex's waits, unlocks its holds and revokes its own
// lease, each bounded in time (see the package doc).
func (m *Mutex) Close() error { return m.p.Close() }
