package lock

import (
	"context"

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
}

// NewMutex returns the mutex called name on cli. It does no I/O. It returns
// ErrNilClient, ErrInvalidName, ErrInvalidNamespace or ErrInvalidOption for
// bad arguments.
func NewMutex(cli *clientv3.Client, name string, options ...Option) (*Mutex, error) {
	p, err := queue.NewPrimitive(cli, string(KindMutex), name, queue.Exclusive{}, queue.KeyWatches, opts(options))
	if err != nil {
		return nil, err
	}
	return &Mutex{p: p, name: name}, nil
}

// Lock blocks until the lock is held and returns the hold. Uncontended, it
// costs one round trip to etcd (plus a lease grant the first time). After a
// Lock that found the lock free, the next first sends a smaller request
// that only takes a free lock; if the lock is held by then, one more round
// trip enqueues it (while the holder holds).
//
// If ctx ends first, Lock removes its waiting key (on a bounded context of
// its own) and returns ctx's error (context.Cause). It returns
// ErrSessionExpired if the lease ends while waiting, ErrDeleted if another
// client deleted the waiting key, ErrClosed after or during Close,
// ErrClientClosed once the etcd client is closed, ErrInvalidOption if the safety margin does not fit the TTL the server
// granted (or the passed session's TTL), or etcd's error.
func (m *Mutex) Lock(ctx context.Context) (*Hold, error) {
	h, err := m.p.Acquire(ctx, &m.p.Q, queue.Request{Mode: queue.Wait})
	if err != nil {
		return nil, err
	}
	return &Hold{h}, nil
}

// TryLock takes the lock if nobody holds it or waits for it, in one round
// trip, and returns ErrLocked at once otherwise, leaving no key behind. Its
// other errors are Lock's.
func (m *Mutex) TryLock(ctx context.Context) (*Hold, error) {
	h, err := m.p.Acquire(ctx, &m.p.Q, queue.Request{Mode: queue.Try})
	if err != nil {
		return nil, err
	}
	return &Hold{h}, nil
}

// Do locks, runs fn with a context that is cancelled when the hold is lost
// (or ctx ends) and the hold's fencing token, then unlocks. It returns fn's
// error joined with Unlock's, or Lock's error if fn never ran. If the hold
// was lost while fn ran, the error matches ErrLost even when fn returned
// nil. Unlock runs on a context of its own, bounded by 5 s, even after ctx
// has ended, and Do waits for it.
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

// Close ends waits in progress (they return ErrClosed), unlocks every hold
// still held through this Mutex, and revokes the lease the Mutex granted, if
// any (a session given with WithSession stays open). The holds are unlocked
// together, on one context bounded by 5 s, then the revoke gets up to 5 s of
// its own (a grant that lands during Close adds one more bounded release),
// so Close does not hang when etcd does not answer. Later calls to Lock and
// TryLock return ErrClosed. Close is idempotent: a Close called while
// another runs waits for it and returns nil.
func (m *Mutex) Close() error { return m.p.Close() }
