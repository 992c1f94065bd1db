package lock

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/ctxerr"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// ReleaseRequested returns a channel closed when some client has asked this
// hold to release (RequestRelease). The holder may unlock, or ignore it;
// the request is deleted when the hold ends. The first call starts a watch
// that ends with the hold (no round trip; one read if etcd compacted the
// revisions since the grant); a request reaches it within about 100 ms.
func (h *Hold) ReleaseRequested() <-chan struct{} { return h.h.ReleaseRequested() }

// RequestRelease asks the current holders of the lock of kind called name
// under namespace to release, and returns their tokens: one for a Mutex,
// every read holder or the writer of an RWMutex, every holder of a
// Semaphore. Waiters are not asked. from, at most MaxRequesterLen bytes,
// tells the holders who asks. It costs two round trips (a read and a Txn of
// guarded puts, on the holders' leases, outside the lock's queue) and
// returns ErrNotHeld when nobody holds, besides Inspect's errors and
// ErrInvalidOption for a bad kind or from.
func RequestRelease(ctx context.Context, cli *clientv3.Client, namespace string, kind Kind, name, from string) ([]fencing.Token, error) {
	if cli == nil {
		return nil, ErrNilClient
	}
	switch {
	case kind != KindMutex && kind != KindRWMutex && kind != KindSemaphore:
		return nil, fmt.Errorf("%w: kind %q is not a lock's", ErrInvalidOption, kind)
	case len(from) > MaxRequesterLen:
		return nil, fmt.Errorf("%w: requester of %d bytes, more than %d", ErrInvalidOption, len(from), MaxRequesterLen)
	}
	if from == "" {
		from = keys.Holder()
	}
	// The holders may change between the read and the Txn: a new holder
	// is asked on the next try.
	for range 3 {
		st, err := Inspect(ctx, cli, namespace, name)
		if err != nil {
			return nil, err
		}
		var targets []queue.Target
		for _, k := range st.Lock(kind).Keys {
			if k.Holding && k.Lease != 0 {
				targets = append(targets, queue.Target{Token: k.Token, Lease: k.Lease})
			}
		}
		if len(targets) == 0 {
			return nil, fmt.Errorf("%w: nobody holds %s %q", ErrNotHeld, kind, name)
		}
		asked, err := queue.RequestRelease(ctx, cli, namespace, targets, from)
		if err != nil {
			if cause := ctxerr.Ended(ctx); cause != nil {
				return nil, cause
			}
			if cli.Ctx().Err() != nil {
				return nil, ErrClientClosed
			}
			return nil, fmt.Errorf("lock: asking the holders of %q: %w", name, err)
		}
		var toks []fencing.Token
		for i, ok := range asked {
			if ok {
				toks = append(toks, targets[i].Token)
			}
		}
		if len(toks) > 0 {
			return toks, nil
		}
	}
	return nil, fmt.Errorf("%w: the holders of %s %q kept changing", ErrNotHeld, kind, name)
}

// MaxRequesterLen is the longest requester description RequestRelease
// takes, in bytes.
const MaxRequesterLen = 4096

// requestRelease is RequestRelease for the lock of p, asked as p's holder.
func requestRelease(ctx context.Context, p *queue.Primitive, kind Kind, name string) ([]fencing.Token, error) {
	_ = context.Cause(ctx) // a nil ctx panics here
	if p.CloseContext().Err() != nil {
		return nil, ErrClosed
	}
	return RequestRelease(ctx, p.Q.Client, p.Cfg.Namespace, kind, name, p.Value)
}

// RequestRelease asks the mutex's holder to release (see the package-level
// RequestRelease) and returns its token; ErrClosed after Close.
func (m *Mutex) RequestRelease(ctx context.Context) (fencing.Token, error) {
	toks, err := requestRelease(ctx, m.p, KindMutex, m.name)
	if err != nil {
		return fencing.Token{}, err
	}
	return toks[0], nil
}

// RequestRelease asks the lock's current holders, the writer or every
// reader, to release (see the package-level RequestRelease) and returns
// their tokens; ErrClosed after Close.
func (m *RWMutex) RequestRelease(ctx context.Context) ([]fencing.Token, error) {
	return requestRelease(ctx, m.p, KindRWMutex, m.name)
}

// RequestRelease asks every current holder of the semaphore to release
// (see the package-level RequestRelease) and returns their tokens;
// ErrClosed after Close.
func (s *Semaphore) RequestRelease(ctx context.Context) ([]fencing.Token, error) {
	return requestRelease(ctx, s.p, KindSemaphore, s.name)
}
