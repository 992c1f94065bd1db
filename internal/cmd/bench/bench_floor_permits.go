package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// The permit floor rows: the bare requests of a FIFO queue of permits on
// etcd, sent by as many contenders as the semaphore and readers rows, with
// no library (no lease keeper, no own-key watch, no retries, no failure
// handling; nobody gives up). They bound what lock.Semaphore and
// lock.RWMutex can reach on the machine. Per permit, each sends:
//
//   - enqueue: one Txn that puts its key on its lease and reads what is
//     ahead of it (keys only);
//   - wait: for watch events of the deletes ahead of it, on watches kept
//     from wait to wait (one stream per client);
//   - with confirm (floor-sem, floor-rw): one read-only Txn after the event
//     that may admit it (its own key and what is still ahead); without
//     (the -noread rows), the events alone decide;
//   - the release: one Txn deleting its key, guarded by its create
//     revision.
//
// floor-sem, 1 permit each of limit: a contender reads every key ahead of
// it at the enqueue (keys only; they can only go) and counts their deletes
// on one watch of the queue's prefix, kept for its life (no watch create
// per wait), until fewer than limit are left; floor-sem then reads once
// (its own key and the keys ahead), floor-sem-noread not. Every release
// reaches every contender's watch (events/op is the contenders), which
// here costs less than watching a window of keys ahead, whose watches
// come and go as the queue's order changes (the permits are released in
// any order), and whose every delete costs a read.
//
// floor-rw, readers and one writer: a reader reads the newest writer
// ahead of it and watches it (the writer's key name is reused: one kept
// watch); on its delete it reads again (floor-rw) or takes the event as
// the grant (floor-rw-noread: a writer's key goes only after it held, when
// nothing older was left). The writer reads every key ahead of it and
// counts their deletes on a prefix watch kept for its life, then reads
// once (floor-rw) or not.
//
// The rows check the rule at each grant with counters the cell's
// contenders share: at most limit permits held, a writer alone.

// measuresPermitFloor says what the permit floor rows measure.
const measuresPermitFloor = "one empty critical section (a permit, or a read or write hold) of N contenders sending the bare requests of a FIFO queue of permits, no library; latency is the wait from the enqueue to holding"

// permitRules is what a permit floor cell's contenders share to check the
// rule at each grant.
type permitRules struct {
	holders atomic.Int32 // semaphore permits, or read holds
	writers atomic.Int32
}

// semFloorCell returns the floor row of n contenders taking 1 permit each
// of limit: with confirm (floor-sem) or without (floor-sem-noread).
func semFloorCell(n int, limit int64, confirm bool, base *baseline) *cell {
	impl := "floor-sem"
	if !confirm {
		impl += "-noread"
	}
	c := &cell{impl: impl, scenario: "contended", contenders: n, measures: measuresPermitFloor, base: base}
	c.measure = func(ctx context.Context, env *benchEnv, ns string, d time.Duration) (sample, error) {
		return measurePermitFloor(ctx, env, ns, d, n, func(f *floorClient, rules *permitRules) locker {
			return &semFloorLocker{floorClient: f, limit: limit, confirm: confirm, rules: rules}
		})
	}
	return c
}

// rwFloorCell returns the floor row of readers readers and one writer:
// with confirm (floor-rw) or without (floor-rw-noread).
func rwFloorCell(readers int, confirm bool, base *baseline) *cell {
	impl := "floor-rw"
	if !confirm {
		impl += "-noread"
	}
	c := &cell{impl: impl, scenario: "readers", contenders: readers + 1, measures: measuresPermitFloor, base: base}
	i := 0
	c.measure = func(ctx context.Context, env *benchEnv, ns string, d time.Duration) (sample, error) {
		i = 0
		return measurePermitFloor(ctx, env, ns, d, readers+1, func(f *floorClient, rules *permitRules) locker {
			i++
			return &rwFloorLocker{floorClient: f, writer: i > readers, confirm: confirm, rules: rules}
		})
	}
	return c
}

// measurePermitFloor runs a permit floor cell of n contenders made by mk
// for d under ns. It closes every client and revokes every lease it made,
// also on error.
func measurePermitFloor(ctx context.Context, env *benchEnv, ns string, d time.Duration, n int, mk func(*floorClient, *permitRules) locker) (sample, error) {
	rules := &permitRules{}
	return measureBare(ctx, env, d, n, func(ctx context.Context) (locker, error) {
		f, err := newFloorClient(ctx, env, ns+"q/")
		if err != nil {
			return nil, err
		}
		return mk(f, rules), nil
	})
}

// floorClient is a permit floor contender's client, lease, key name and
// kept watches.
type floorClient struct {
	cli    *clientv3.Client
	lease  clientv3.LeaseID
	prefix string // the queue's keys
	// kept watches by key (or, for the prefix watch, by prefix); all on
	// the client's one stream (the same context metadata: none).
	watches map[string]*keptWatch
	key     string // this contender's, set by its locker
}

// keptWatch is a watch of deletes, up since revision created.
type keptWatch struct {
	ch      clientv3.WatchChan
	cancel  context.CancelFunc
	created int64
}

// newFloorClient makes a contender's client, and a lease that outlives
// ctx's deadline (not kept alive: no renewal runs beside the measured
// requests).
func newFloorClient(ctx context.Context, env *benchEnv, prefix string) (*floorClient, error) {
	cli, err := env.newClient()
	if err != nil {
		return nil, err
	}
	lg, err := cli.Grant(ctx, bareTxnTTL(ctx))
	if err != nil {
		return nil, errors.Join(err, cmdline.CloseClient(cli)())
	}
	return &floorClient{cli: cli, lease: lg.ID, prefix: prefix, watches: map[string]*keptWatch{}}, nil
}

// watch returns the kept watch of deletes of key (or of every key under
// it, with prefix), opening it at the server's current revision if there
// is none (and waiting for its created reply).
func (f *floorClient) watch(ctx context.Context, key string, prefix bool) (*keptWatch, error) {
	if x := f.watches[key]; x != nil {
		return x, nil
	}
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify(), clientv3.WithFilterPut()}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	wctx, cancel := context.WithCancel(context.Background())
	wch := f.cli.Watch(wctx, key, opts...)
	var (
		wr clientv3.WatchResponse
		ok bool
	)
	select {
	case wr, ok = <-wch:
	case <-ctx.Done():
		cancel()
		return nil, context.Cause(ctx)
	}
	if !ok || wr.Err() != nil || !wr.Created {
		cancel()
		return nil, fmt.Errorf("watch of %s not created: %v", key, wr.Err())
	}
	x := &keptWatch{ch: wch, cancel: cancel, created: wr.Header.Revision}
	f.watches[key] = x
	return x, nil
}

// keepOnly stops the kept watches on keys not in keep.
func (f *floorClient) keepOnly(keep map[string]int64) {
	for k, x := range f.watches {
		if _, ok := keep[k]; !ok {
			x.cancel()
			delete(f.watches, k)
		}
	}
}

// awaitDeletes waits on the watches xs for deletes of the keys of ahead
// (by key: their create revisions) and removes each deleted from ahead,
// until at most left remain. A delete at or before a key's creation is of
// an earlier key of that name: skipped. It returns the revision of the
// last delete it took.
func awaitDeletes(ctx context.Context, xs []*keptWatch, ahead map[string]int64, left int) (int64, error) {
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
	for _, x := range xs {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(x.ch)})
	}
	var last int64
	for len(ahead) > left {
		i, v, ok := reflect.Select(cases)
		if i == 0 {
			return 0, context.Cause(ctx)
		}
		var wr clientv3.WatchResponse
		if ok {
			wr = v.Interface().(clientv3.WatchResponse)
		}
		if !ok || wr.Err() != nil {
			return 0, fmt.Errorf("watch broke: %v", wr.Err())
		}
		for _, ev := range wr.Events {
			k := string(ev.Kv.Key)
			if rev, ok := ahead[k]; ok && ev.Type == mvccpb.DELETE && ev.Kv.ModRevision > rev {
				delete(ahead, k)
				last = ev.Kv.ModRevision
			}
		}
	}
	return last, nil
}

// enqueue puts the contender's key on its lease and, in the same Txn,
// runs read; it returns the key's create revision and read's keys older
// than it.
func (f *floorClient) enqueue(ctx context.Context, read clientv3.Op) (int64, []*mvccpb.KeyValue, error) {
	resp, err := f.cli.Txn(ctx).Then(clientv3.OpPut(f.key, benchValue, clientv3.WithLease(f.lease)), read).Commit()
	if err != nil {
		return 0, nil, fmt.Errorf("enqueue: %w", err)
	}
	rev := resp.Header.Revision
	return rev, olderThan(resp.Responses[1].GetResponseRange().Kvs, rev), nil
}

// confirmRead reads, in one read-only serializable Txn, the contender's own key
// (of revision rev) and read, at a revision of at least atLeast; it
// returns read's keys older than rev and the revision read at.
func (f *floorClient) confirmRead(ctx context.Context, rev, atLeast int64, read clientv3.Op) ([]*mvccpb.KeyValue, int64, error) {
	for {
		resp, err := f.cli.Txn(ctx).Then(clientv3.OpGet(f.key, clientv3.WithKeysOnly(), clientv3.WithSerializable()), read).Commit()
		if err != nil {
			return nil, 0, fmt.Errorf("read: %w", err)
		}
		if resp.Header.Revision < atLeast {
			continue // a member behind the event: ask again (never, with one member)
		}
		if own := resp.Responses[0].GetResponseRange().Kvs; len(own) == 0 || own[0].CreateRevision != rev {
			return nil, 0, fmt.Errorf("key %s of revision %d is gone", f.key, rev)
		}
		return olderThan(resp.Responses[1].GetResponseRange().Kvs, rev), resp.Header.Revision, nil
	}
}

// olderThan returns the keys of kvs created before rev.
func olderThan(kvs []*mvccpb.KeyValue, rev int64) []*mvccpb.KeyValue {
	out := kvs[:0:0]
	for _, kv := range kvs {
		if kv.CreateRevision < rev {
			out = append(out, kv)
		}
	}
	return out
}

// release returns the unlock of the key of revision rev: one Txn deleting
// it if it is still that key. done runs first.
func (f *floorClient) release(rev int64, done func()) func(context.Context) error {
	return func(ctx context.Context) error {
		done()
		r, err := f.cli.Txn(ctx).If(fencing.Token{Key: f.key, Revision: rev}.Cmp()).Then(clientv3.OpDelete(f.key)).Commit()
		if err != nil {
			return fmt.Errorf("release: %w", err)
		}
		if !r.Succeeded {
			return fmt.Errorf("release: key %s of revision %d is gone", f.key, rev)
		}
		return nil
	}
}

// close stops the kept watches, revokes the lease and closes the client.
func (f *floorClient) close() error {
	f.keepOnly(nil)
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, err := f.cli.Revoke(ctx, f.lease)
	return errors.Join(err, cmdline.CloseClient(f.cli)())
}

// semFloorLocker takes one permit of limit (see the permit floor rows).
type semFloorLocker struct {
	*floorClient
	limit   int64
	confirm bool
	rules   *permitRules
}

// keysAhead reads the n newest keys of the queue, keys only, at most of
// revision below maxRev if not 0; all of them if n is 0.
func (l *floorClient) keysAhead(n int64, maxRev int64) clientv3.Op {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(n)}
	if maxRev != 0 {
		opts = append(opts, clientv3.WithMaxCreateRev(maxRev-1), clientv3.WithSerializable())
	}
	return clientv3.OpGet(l.prefix, opts...)
}

func (l *semFloorLocker) lock(ctx context.Context) (func(context.Context) error, error) {
	if l.key == "" {
		l.key = fmt.Sprintf("%s%x", l.prefix, int64(l.lease))
	}
	x, err := l.watch(ctx, l.prefix, true) // up since before the first enqueue
	if err != nil {
		return nil, err
	}
	rev, older, err := l.enqueue(ctx, l.keysAhead(0, 0))
	if err != nil {
		return nil, err
	}
	for {
		ahead := make(map[string]int64, len(older))
		for _, kv := range older {
			ahead[string(kv.Key)] = kv.CreateRevision
		}
		last, err := awaitDeletes(ctx, []*keptWatch{x}, ahead, int(l.limit)-1)
		if err != nil {
			return nil, err
		}
		if !l.confirm {
			break
		}
		if older, _, err = l.confirmRead(ctx, rev, max(last, rev), l.keysAhead(0, rev)); err != nil {
			return nil, err
		}
		if int64(len(older)) < l.limit {
			break
		}
	}
	return l.grant(rev)
}

func (l *semFloorLocker) grant(rev int64) (func(context.Context) error, error) {
	if h := l.rules.holders.Add(1); int64(h) > l.limit {
		l.rules.holders.Add(-1)
		return nil, fmt.Errorf("semaphore limit exceeded: %d holders of %d at the grant of revision %d", h, l.limit, rev)
	}
	return l.release(rev, func() { l.rules.holders.Add(-1) }), nil
}

// rwFloorLocker is a reader or the writer of the readers floor (see the
// permit floor rows). Readers' keys are under prefix r/, the writer's
// under w/.
type rwFloorLocker struct {
	*floorClient
	writer  bool
	confirm bool
	rules   *permitRules
}

func (l *rwFloorLocker) lock(ctx context.Context) (func(context.Context) error, error) {
	if l.key == "" {
		l.key = fmt.Sprintf("%sr/%x", l.prefix, int64(l.lease))
		if l.writer {
			l.key = fmt.Sprintf("%sw/%x", l.prefix, int64(l.lease))
		}
	}
	if l.writer {
		return l.lockWriter(ctx)
	}
	// The newest writer ahead, if any.
	writers := func(maxRev int64) clientv3.Op {
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(1)}
		if maxRev != 0 {
			opts = append(opts, clientv3.WithMaxCreateRev(maxRev-1), clientv3.WithSerializable())
		}
		return clientv3.OpGet(l.prefix+"w/", opts...)
	}
	rev, ahead, err := l.enqueue(ctx, writers(0))
	if err != nil {
		return nil, err
	}
	readRev := rev
	for len(ahead) > 0 {
		w := map[string]int64{string(ahead[0].Key): ahead[0].CreateRevision}
		x, err := l.watch(ctx, string(ahead[0].Key), false)
		if err != nil {
			return nil, err
		}
		l.keepOnly(w)
		atLeast := x.created
		if x.created <= readRev {
			if atLeast, err = awaitDeletes(ctx, []*keptWatch{x}, w, 0); err != nil {
				return nil, err
			}
			if !l.confirm {
				break
			}
		}
		if ahead, readRev, err = l.confirmRead(ctx, rev, atLeast, writers(rev)); err != nil {
			return nil, err
		}
	}
	if l.rules.holders.Add(1); l.rules.writers.Load() != 0 {
		l.rules.holders.Add(-1)
		return nil, fmt.Errorf("a read hold granted at revision %d while the writer holds", rev)
	}
	return l.release(rev, func() { l.rules.holders.Add(-1) }), nil
}

// lockWriter reads every key ahead at the enqueue and counts their deletes
// on the prefix watch, up since before the first enqueue; with confirm,
// it then reads once.
func (l *rwFloorLocker) lockWriter(ctx context.Context) (func(context.Context) error, error) {
	x, err := l.watch(ctx, l.prefix, true)
	if err != nil {
		return nil, err
	}
	all := clientv3.OpGet(l.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	rev, older, err := l.enqueue(ctx, all)
	if err != nil {
		return nil, err
	}
	for len(older) > 0 {
		ahead := make(map[string]int64, len(older))
		for _, kv := range older {
			ahead[string(kv.Key)] = kv.CreateRevision
		}
		atLeast, err := awaitDeletes(ctx, []*keptWatch{x}, ahead, 0)
		if err != nil {
			return nil, err
		}
		if !l.confirm {
			break
		}
		one := clientv3.OpGet(l.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithMaxCreateRev(rev-1), clientv3.WithSerializable(), clientv3.WithLimit(1))
		if older, _, err = l.confirmRead(ctx, rev, atLeast, one); err != nil {
			return nil, err
		}
	}
	if l.rules.writers.Add(1); l.rules.holders.Load() != 0 {
		l.rules.writers.Add(-1)
		return nil, fmt.Errorf("the write hold granted at revision %d while readers hold", rev)
	}
	return l.release(rev, func() { l.rules.writers.Add(-1) }), nil
}
