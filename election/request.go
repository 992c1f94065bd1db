package election

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/ctxerr"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// MaxRequesterLen is the longest requester description RequestResign
// takes, in bytes.
const MaxRequesterLen = 4096

// ResignRequested returns a channel closed when some client has asked this
// term to step down (RequestResign): for a graceful hand-over, say before
// a rolling upgrade stops this process. The leader may resign (in Run:
// return from Lead, and the next candidate leads while this one campaigns
// again, last in line), or ignore it; the request is deleted when the term
// ends. The first call starts a watch that ends with the term (no round
// trip; one read if etcd compacted the revisions since the term began); a
// request reaches it within about 100 ms.
func (t *Term) ResignRequested() <-chan struct{} { return t.h.ReleaseRequested() }

// RequestResign asks the current leader of the election called name under
// namespace to step down, and returns who was asked. from, at most
// MaxRequesterLen bytes, tells the leader who asks; empty means
// "hostname:pid". It costs two round trips (a read, and a put on the
// leader's lease guarded by its key and lease, outside the election's
// queue) and returns ErrNoLeader when nobody leads, ErrNilClient,
// ErrInvalidName, ErrInvalidNamespace, ErrInvalidOption for a bad from,
// ErrClientClosed, ctx's cause or etcd's error.
func RequestResign(ctx context.Context, cli *clientv3.Client, namespace, name, from string) (Leader, error) {
	if cli == nil {
		return Leader{}, ErrNilClient
	}
	if err := errors.Join(keys.ValidateName(name), keys.ValidateNamespace(namespace)); err != nil {
		return Leader{}, public.Err(err)
	}
	if len(from) > MaxRequesterLen {
		return Leader{}, fmt.Errorf("%w: requester of %d bytes, more than %d", ErrInvalidOption, len(from), MaxRequesterLen)
	}
	if err := context.Cause(ctx); err != nil {
		return Leader{}, err
	}
	if from == "" {
		from = keys.Holder()
	}
	fail := func(err error) (Leader, error) {
		if cause := ctxerr.Ended(ctx); cause != nil {
			return Leader{}, cause
		}
		if cli.Ctx().Err() != nil {
			return Leader{}, ErrClientClosed
		}
		return Leader{}, err
	}
	prefix := KeyPrefix(namespace, name)
	// The leader may change between the read and the Txn: the new one is
	// asked on the next try.
	for range 3 {
		resp, err := cli.Get(ctx, prefix, clientv3.WithFirstCreate()...)
		if err != nil {
			return fail(err)
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].Lease == 0 {
			return Leader{}, ErrNoLeader
		}
		l := leaderOf(resp.Kvs[0])
		asked, err := queue.RequestRelease(ctx, cli, namespace, []queue.Target{{Token: l.Token, Lease: l.Lease}}, from)
		if err != nil {
			return fail(err)
		}
		if asked[0] {
			return l, nil
		}
	}
	return Leader{}, fmt.Errorf("%w: the leader of %q kept changing", ErrNoLeader, name)
}

// RequestResign asks the election's current leader to step down (see the
// package-level RequestResign), as this Election's holder description, and
// returns who was asked; ErrClosed after Close.
func (e *Election) RequestResign(ctx context.Context) (Leader, error) {
	_ = context.Cause(ctx) // a nil ctx panics here
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return Leader{}, ErrClosed
	}
	return RequestResign(ctx, e.p.Q.Client, e.p.Cfg.Namespace, e.name, e.p.Value)
}
