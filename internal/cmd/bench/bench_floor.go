package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// The floor rows: N contenders, each with its own client, sending the bare
// requests of a contended lock.Mutex handoff with none of the library's
// work around them (no retries, no lease keeper, no own-key watch, no
// failure handling):
//
//   - enqueue: the Txn of a contended Lock, which puts the key on the
//     contender's lease and reads the two newest keys (its own and the one
//     ahead);
//   - wait: for the delete of the key ahead, on a watch kept open from one
//     wait to the next (one stream per client);
//   - floor: one read after the delete event, as the library's confirm
//     read (its own key and the newest key older than it); floor-noread
//     takes the event alone as the grant, to show what that read costs;
//   - an empty critical section, and the release: one Txn deleting the key,
//     guarded by its create revision.
//
// A waiter whose watch on the key ahead came up after the read that found
// that key reads once more before waiting (also in floor-noread), since the
// delete may lie between: the library does the same. In the contended loop
// the watch is kept, so this is rare (see creates/op).
//
// The rows check mutual exclusion: a counter of holders, shared by the
// cell's contenders, must read 1 at each grant, and the grants' revisions
// (the keys' create revisions, the fencing tokens) must grow.

// measuresFloor says what the floor rows measure.
const measuresFloor = "one empty critical section of N contenders sending the bare requests of a contended lock.Mutex handoff, no library; latency is the wait from the enqueue to holding"

// floorCell returns the floor row of n contenders: with confirm, one read
// after each delete event (floor), else none (floor-noread).
func floorCell(n int, confirm bool) *cell {
	impl := "floor"
	if !confirm {
		impl = "floor-noread"
	}
	c := &cell{impl: impl, scenario: "contended", contenders: n, measures: measuresFloor}
	c.measure = func(ctx context.Context, env *benchEnv, ns string, d time.Duration) (sample, error) {
		s, _, err := measureFloor(ctx, env, ns, d, n, confirm)
		return s, err
	}
	return c
}

// floorExclusion is what a floor cell's contenders share to check that at
// most one holds at a time.
type floorExclusion struct {
	holders atomic.Int32
	// grants are the revisions of the grants, in the order they were made;
	// appended to by the holder only (ordered by holders' atomics).
	grants []int64
}

// measureFloor runs a floor cell of n contenders for d under ns and returns
// its sample and the revisions of all its grants in order (the warm-up's,
// and those after the deadline, included). It closes every client and
// revokes every lease it made, also on error.
func measureFloor(ctx context.Context, env *benchEnv, ns string, d time.Duration, n int, confirm bool) (s sample, grants []int64, err error) {
	ex := &floorExclusion{}
	s, err = measureBare(ctx, env, d, n, func(ctx context.Context) (locker, error) {
		return newFloorLocker(ctx, env, ns+"lock/", confirm, ex)
	})
	return s, ex.grants, err
}

// measureBare runs a cell of n contenders made by mk for d: each is made
// and warmed up (its connection, its watches) by one cycle, in turn, then
// all run at once. It closes every contender it made, also on error.
func measureBare(ctx context.Context, env *benchEnv, d time.Duration, n int, mk func(context.Context) (locker, error)) (s sample, err error) {
	ctx, cancel := context.WithTimeout(ctx, d+cellSlack)
	defer cancel()
	ls := make([]locker, 0, n)
	defer func() {
		for _, l := range ls {
			err = errors.Join(err, l.close())
		}
	}()
	for range n {
		l, err := mk(ctx)
		if err != nil {
			return s, err
		}
		ls = append(ls, l)
		if err := cycle(ctx, l); err != nil { // warm-up
			return s, err
		}
	}
	return runContenders(ctx, ls, d, &env.tally)
}

// floorLocker is one contender of a floor cell.
type floorLocker struct {
	cli     *clientv3.Client
	lease   clientv3.LeaseID
	prefix  string // the lock's keys
	key     string // this contender's key, the same at every Lock
	confirm bool
	ex      *floorExclusion
	// The kept watch: on the key ahead, up since revision created.
	ahead   string
	created int64
	wch     clientv3.WatchChan
	wcancel context.CancelFunc
}

// newFloorLocker makes a contender with its own client, and a lease that
// outlives ctx's deadline (it is not kept alive: no renewal runs beside the
// measured requests).
func newFloorLocker(ctx context.Context, env *benchEnv, prefix string, confirm bool, ex *floorExclusion) (*floorLocker, error) {
	cli, err := env.newClient()
	if err != nil {
		return nil, err
	}
	lg, err := cli.Grant(ctx, bareTxnTTL(ctx))
	if err != nil {
		return nil, errors.Join(err, cmdline.CloseClient(cli)())
	}
	return &floorLocker{cli: cli, lease: lg.ID, prefix: prefix, key: keys.Slot(prefix, lg.ID, 0, 0), confirm: confirm, ex: ex}, nil
}

// lock implements locker: enqueue, wait for the key ahead to go, hold.
func (l *floorLocker) lock(ctx context.Context) (func(context.Context) error, error) {
	// The enqueue Txn of a contended lock.Mutex Lock (the full form; the
	// lean one is off while another contender loops): if our key is new,
	// put it and read the two newest keys.
	put := clientv3.OpPut(l.key, benchValue, clientv3.WithLease(l.lease))
	resp, err := l.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", 0)).
		Then(append([]clientv3.Op{put}, queue.Exclusive{}.Reads(l.prefix, 0)...)...).Commit()
	if err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("enqueue: key %s already exists", l.key)
	}
	rev := resp.Header.Revision // our key's create revision
	var ahead *mvccpb.KeyValue
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if kv.CreateRevision < rev {
			ahead = kv
			break
		}
	}
	readRev := rev // the revision the key ahead was last read at
	for ahead != nil {
		if err := l.watch(ctx, string(ahead.Key)); err != nil {
			return nil, err
		}
		if l.created > readRev {
			// The watch came up after the read: the delete may lie between.
			if ahead, readRev, err = l.read(ctx, rev, l.created); err != nil {
				return nil, err
			}
			continue
		}
		gone, err := l.awaitDelete(ctx, ahead)
		if err != nil {
			return nil, err
		}
		if !l.confirm {
			break
		}
		if ahead, readRev, err = l.read(ctx, rev, gone); err != nil {
			return nil, err
		}
	}
	if h := l.ex.holders.Add(1); h != 1 {
		return nil, fmt.Errorf("mutual exclusion violated: %d holders at the grant of revision %d", h, rev)
	}
	l.ex.grants = append(l.ex.grants, rev)
	return func(ctx context.Context) error {
		l.ex.holders.Add(-1)
		r, err := l.cli.Txn(ctx).If(fencing.Token{Key: l.key, Revision: rev}.Cmp()).Then(clientv3.OpDelete(l.key)).Commit()
		if err != nil {
			return fmt.Errorf("release: %w", err)
		}
		if !r.Succeeded {
			return fmt.Errorf("release: key %s of revision %d is gone", l.key, rev)
		}
		return nil
	}, nil
}

// watch makes the kept watch watch key's deletes: it keeps the watch it
// has if on key, else opens one at the server's current revision (waiting
// for its created reply, so that it misses nothing after l.created) before
// it cancels the old one, so that the client's watch stream stays open.
func (l *floorLocker) watch(ctx context.Context, key string) error {
	if l.ahead == key {
		return nil
	}
	wctx, cancel := context.WithCancel(context.Background())
	wch := l.cli.Watch(wctx, key, clientv3.WithCreatedNotify(), clientv3.WithFilterPut())
	var (
		wr clientv3.WatchResponse
		ok bool
	)
	select {
	case wr, ok = <-wch:
	case <-ctx.Done():
		cancel()
		return context.Cause(ctx)
	}
	if !ok || wr.Err() != nil || !wr.Created {
		cancel()
		return fmt.Errorf("watch of %s not created: %v", key, wr.Err())
	}
	l.stopWatch()
	l.ahead, l.created, l.wch, l.wcancel = key, wr.Header.Revision, wch, cancel
	return nil
}

// stopWatch cancels the kept watch, if any.
func (l *floorLocker) stopWatch() {
	if l.wcancel != nil {
		l.wcancel()
	}
	l.ahead, l.created, l.wch, l.wcancel = "", 0, nil, nil
}

// awaitDelete waits on the kept watch for the delete of ahead and returns
// its revision. A delete at or before ahead's creation is of an earlier key
// of the same name, delivered to the kept watch during an earlier wait or
// hold: skipped.
func (l *floorLocker) awaitDelete(ctx context.Context, ahead *mvccpb.KeyValue) (int64, error) {
	for {
		select {
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case wr, ok := <-l.wch:
			if !ok || wr.Err() != nil {
				return 0, fmt.Errorf("watch of %s broke: %v", ahead.Key, wr.Err())
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE && ev.Kv.ModRevision > ahead.CreateRevision {
					return ev.Kv.ModRevision, nil
				}
			}
		}
	}
}

// read is the confirm read of lock.Mutex: one read-only, serializable Txn
// of our own key (of revision rev) and the newest key older than it, at a
// revision of at least atLeast. It returns that key (nil for none) and the
// revision read at.
func (l *floorLocker) read(ctx context.Context, rev, atLeast int64) (*mvccpb.KeyValue, int64, error) {
	ops := append([]clientv3.Op{clientv3.OpGet(l.key, clientv3.WithKeysOnly(), clientv3.WithSerializable())},
		queue.Exclusive{}.Reads(l.prefix, rev)...)
	for {
		resp, err := l.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, 0, fmt.Errorf("read: %w", err)
		}
		if resp.Header.Revision < atLeast {
			continue // a member behind the event: ask again (never, with one member)
		}
		if own := resp.Responses[0].GetResponseRange().Kvs; len(own) == 0 || own[0].CreateRevision != rev {
			return nil, 0, fmt.Errorf("key %s of revision %d is gone", l.key, rev)
		}
		var ahead *mvccpb.KeyValue
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			ahead = kvs[0]
		}
		return ahead, resp.Header.Revision, nil
	}
}

// close implements locker: it cancels the kept watch, revokes the lease and
// closes the client.
func (l *floorLocker) close() error {
	l.stopWatch()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, err := l.cli.Revoke(ctx, l.lease)
	return errors.Join(err, cmdline.CloseClient(l.cli)())
}
