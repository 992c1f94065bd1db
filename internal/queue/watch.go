package queue

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/backoff"
	"github.com/etcdlock/etcdlock/internal/lease"
)

// The pause between retries of a wait, a hold's check of its key, or the
// dispatcher's watch: 20 ms, doubling to 1 s.
func newBackoff() *backoff.Backoff { return backoff.New(20*time.Millisecond, time.Second) }

// watchTarget is what a watch watches: one key, or every key under a prefix.
type watchTarget struct {
	key    string
	prefix bool // key is a prefix
}

// watch is one etcd watch that this package opened and must cancel.
type watch struct {
	ch      clientv3.WatchChan
	cancel  context.CancelFunc
	created int64 // server revision when the watch was created; events after it are delivered
	target  watchTarget
}

func (x *watch) stop() {
	if x != nil {
		x.cancel()
	}
}

// openWatch watches deletes of t (a key, or a prefix) from the server's
// current revision, and waits for the created reply, so that no event after
// x.created is missed and the watcher starts synced.
//
// The watch outlives ctx (a waiter's own watch goes on into its hold), but
// ctx can end its creation: clientv3's Watch blocks until the server has
// answered, which it never does while etcd is unreachable.
func (q *Queue) openWatch(ctx context.Context, t watchTarget) (*watch, error) {
	return openWatch(ctx, q.Client, t)
}

// openWatch is Queue.openWatch on cli, with extra options.
//
// Every watch it opens has the same context metadata (WithRequireLeader's),
// so all of them share one clientv3 stream per client (see keyWatches).
func openWatch(ctx context.Context, cli *clientv3.Client, t watchTarget, extra ...clientv3.OpOption) (*watch, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	stop := context.AfterFunc(ctx, cancel)
	opts := append([]clientv3.OpOption{clientv3.WithCreatedNotify(), clientv3.WithFilterPut()}, extra...)
	if t.prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	x := &watch{ch: cli.Watch(wctx, t.key, opts...), cancel: cancel, target: t}
	wr, ok := <-x.ch
	if !stop() { // ctx ended meanwhile
		cancel()
		return nil, context.Cause(ctx)
	}
	if !ok || wr.Err() != nil || !wr.Created {
		cancel()
		if ok && wr.Err() != nil {
			return nil, wr.Err()
		}
		return nil, errors.New("watch closed before it was created")
	}
	x.created = wr.Header.Revision
	return x, nil
}

// keyGone is the cause of a hold's loss when its key was seen deleted:
// ErrExpired if the keeper knows the lease is gone, else ErrDeleted. It
// asks etcd nothing: the hold is lost either way and is told at once, not
// one round trip (or, with etcd slow, a timeout) later, while the next
// waiter may already hold. A lease revoked by another client thus shows as
// ErrDeleted; the keeper is asked to renew now, so that it soon knows.
func keyGone(k *lease.Keeper) error {
	if k.Gone() != nil {
		return lease.ErrExpired
	}
	k.Check()
	return ErrDeleted
}

// whyDeleted tells why a key on k's lease vanished: ErrExpired if the lease
// is gone, else ErrDeleted. One TimeToLive, on a bounded context: for a
// waiter only, whose caller wants to know whether its session is still
// good; a hold uses keyGone.
func (q *Queue) whyDeleted(k *lease.Keeper) error {
	if k.Gone() != nil {
		return lease.ErrExpired
	}
	ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
	defer cancel()
	resp, err := q.Client.TimeToLive(ctx, k.ID())
	if err == nil && resp.TTL <= 0 {
		return lease.ErrExpired
	}
	return ErrDeleted
}
