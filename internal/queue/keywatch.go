package queue

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/internal/keys"
)

// The watches of a Primitive with per-key watching (a mutex, an election),
// kept open across waits and holds:
//
//   - Own keys: a dispatcher on the prefix of the Primitive's own slot keys
//     (one lease, one pool), which routes the deletes of its own keys to its
//     waiters and holds. A wait or a hold registers its key with it: no watch
//     created or cancelled per Lock, and, the watch being up since before the
//     enqueue, no read to cover the time before it was created. It gets the
//     deletes of this Primitive's keys only, one per release.
//   - The blocker: the watch on a lone key ahead is kept after the wait,
//     for the next wait whose blocker has the same name; a kept watch
//     still gets every delete of its key, so the next wait stops it when
//     it does not take it. Slot names are reused, and contenders
//     looping on a lock keep their order, so the key ahead is usually a key
//     of the same name: the next wait then creates no watch, and, that
//     watch being open since before the enqueue, needs no read before
//     waiting for the delete.
//
// The own-key watches of every Primitive of a client share one gRPC watch
// stream, the client's hub's (see hub), so that holds cost no goroutine
// each. Blocker watches share clientv3's stream (clientv3 shares a stream
// among watches of one client whose contexts carry the same metadata, and
// closes it with its last watch), so that a wait opens no stream either.
// A wait whose blocker watches are not kept (more than one blocker: a
// semaphore's or a writer's window) would close that stream at its end,
// and the next wait would open another: so such a Primitive keeps one
// idle watch on the stream for its life (see holdStream).

// blockerKeep is how long blocker watches are kept, unused, for the next
// wait. Its deletes are only read by that wait (or by the hint's check), so
// the time bounds what clientv3 buffers for a Primitive no longer used.
const blockerKeep = time.Second

// keyWatches is a Primitive's kept watches. It is safe for concurrent use.
type keyWatches struct {
	ctx context.Context // the Primitive's: cancelled at Close
	cli *clientv3.Client
	lg  *zap.Logger

	mu     sync.Mutex
	closed bool
	// last is the dispatcher of the last lease's own keys; owns, made when
	// a second lease comes, every one by own-key prefix (see own).
	last  *dispatcher
	owns  map[string]*dispatcher
	blk   []*watch    // the kept blocker watch, if any
	timer *time.Timer // stops blk after blockerKeep unused
	// seen: a watch of blk delivered a delete after keptRev, the
	// revision of the last read of the wait that kept it, so another
	// contender held the lock meanwhile (see contended).
	seen    bool
	keptRev int64
	// idle, once a wait had watches it could not keep, is a watch that
	// delivers nothing, on the blocker watches' clientv3 stream: it keeps
	// the stream up between waits (see holdStream).
	idle *watch
}

func newKeyWatches(ctx context.Context, cli *clientv3.Client, lg *zap.Logger) *keyWatches {
	return &keyWatches{ctx: ctx, cli: cli, lg: lg}
}

// ownPrefix returns the prefix of the keys a waiter with key may get from
// q: its slot pool's (see Slots.poolPrefix), or the key itself when it is
// not a slot.
func (q *Queue) ownPrefix(key string, lease clientv3.LeaseID) string {
	if q.Slots != nil {
		if p := q.Slots.poolPrefix(q.Prefix, lease); p != "" && strings.HasPrefix(key, p) {
			return p
		}
	}
	return key
}

// own returns the dispatcher of the own keys under prefix, made (not
// started) if new. A new prefix means a new lease, granted after the last
// one expired: one dispatcher per lease the Primitive used, each closing
// its watch once idle (see watchIdle), all stopped at Close.
func (kw *keyWatches) own(prefix string) *dispatcher {
	kw.mu.Lock()
	defer kw.mu.Unlock()
	if d := kw.last; d != nil && d.prefix == prefix {
		return d
	}
	if d := kw.owns[prefix]; d != nil {
		return d
	}
	if kw.closed {
		// An acquire that raced with Close: a dispatcher that opens
		// nothing and holds no hub (Close has closed the others).
		return &dispatcher{cli: kw.cli, prefix: prefix, lg: kw.lg, ctx: kw.ctx, closed: true}
	}
	d := newDispatcher(kw.ctx, kw.cli, prefix, kw.lg)
	if kw.last != nil {
		if kw.owns == nil {
			kw.owns = map[string]*dispatcher{kw.last.prefix: kw.last}
		}
		kw.owns[prefix] = d
	}
	kw.last = d
	return d
}

// dispatchersLocked returns every own dispatcher made.
func (kw *keyWatches) dispatchersLocked() []*dispatcher {
	if kw.owns == nil {
		if kw.last == nil {
			return nil
		}
		return []*dispatcher{kw.last}
	}
	ds := make([]*dispatcher, 0, len(kw.owns))
	for _, d := range kw.owns {
		ds = append(ds, d)
	}
	return ds
}

// touch records a use of the own dispatchers whose watch is open, so that
// none closes as idle between a contender's Locks; it starts none (an
// uncontended Primitive has no watch).
func (kw *keyWatches) touch() {
	kw.mu.Lock()
	defer kw.mu.Unlock()
	for _, d := range kw.dispatchersLocked() {
		d.mu.Lock()
		if d.wid != 0 {
			d.last = time.Now()
		}
		d.mu.Unlock()
	}
}

// takeBlocker returns a kept blocker watch on t, for the caller's use
// alone, or nil.
func (kw *keyWatches) takeBlocker(t watchTarget) *watch {
	kw.mu.Lock()
	defer kw.mu.Unlock()
	i := slices.IndexFunc(kw.blk, func(x *watch) bool { return x.target == t })
	if i < 0 {
		return nil
	}
	x := kw.blk[i]
	kw.blk = slices.Delete(kw.blk, i, i+1)
	kw.seen = false
	if len(kw.blk) == 0 {
		kw.timer.Stop()
	}
	return x
}

// keepBlockers keeps xs (watches on blocker keys, healthy as far as their
// user knows) for the next wait, in place of those kept before; or stops
// them when they cannot be kept.
func (kw *keyWatches) keepBlockers(xs []*watch, rev int64) {
	kw.mu.Lock()
	if kw.closed || len(xs) == 0 || xs[0].target.prefix {
		kw.mu.Unlock()
		for _, x := range xs {
			x.stop()
		}
		return
	}
	old := kw.blk
	kw.blk, kw.seen, kw.keptRev = xs, false, rev
	if kw.timer == nil {
		kw.timer = time.AfterFunc(blockerKeep, kw.expire)
	} else {
		kw.timer.Reset(blockerKeep)
	}
	kw.mu.Unlock()
	for _, x := range old {
		x.stop()
	}
}

// dropBlockers stops the kept blocker watches: a wait took those it
// needed, and the others would bring the deletes of their keys for
// nothing until the next wait.
func (kw *keyWatches) dropBlockers() { kw.expire() }

// expire stops the kept blocker watches, unused for blockerKeep.
func (kw *keyWatches) expire() {
	kw.mu.Lock()
	xs := kw.blk
	kw.blk = nil
	kw.mu.Unlock()
	for _, x := range xs {
		x.stop()
	}
}

// contended reports whether a kept blocker watch has delivered a delete
// since it was kept: a contender's key of that name went, so another
// contender used the lock after this Primitive's last wait. It reads only
// what has arrived, and asks etcd nothing. Those deletes are of keys
// created before any later wait's enqueue and deleted since, so no later
// wait on a key of that name needs them (see waiter.awaitKeys).
func (kw *keyWatches) contended() bool {
	kw.mu.Lock()
	defer kw.mu.Unlock()
	for i := 0; i < len(kw.blk) && !kw.seen; {
		select {
		case wr, ok := <-kw.blk[i].ch:
			if !ok || wr.Err() != nil {
				kw.blk[i].stop()
				kw.blk = slices.Delete(kw.blk, i, i+1)
				continue
			}
			for _, ev := range wr.Events {
				// A delete up to keptRev woke the wait that kept the
				// watch, or came before it; a later one is another's.
				if ev.Type == mvccpb.DELETE && ev.Kv.ModRevision > kw.keptRev {
					kw.seen = true
				}
			}
		default:
			i++
		}
	}
	return kw.seen
}

// holdStream makes sure the Primitive has its idle watch, on key (one of
// the queue's, which no one writes: the queue's prefix itself), so that
// clientv3's stream of blocker watches stays up after a wait stops its
// watches. Without it, each wait with several blockers (a semaphore, a
// writer behind readers) opened a gRPC stream and closed it at its end,
// about one stream per acquire under contention: a stream costs the
// client and the server a goroutine set and an HTTP/2 stream set-up each
// time. The idle watch costs one watch create, once per Primitive (on the
// first such wait, not per acquire), and one server watcher on a key that
// never changes, for the Primitive's life; it is stopped at Close. Both
// filters are set, so that even a write of key sends nothing.
//
// A watch broken since (the stream lost its leader, which ends every watch
// on it) is opened anew here, at the next wait that needs it. An error
// opening it is not the wait's: the wait goes on without it.
func (kw *keyWatches) holdStream(ctx context.Context, key string) {
	kw.mu.Lock()
	if kw.closed {
		kw.mu.Unlock()
		return
	}
	if x := kw.idle; x != nil {
		select {
		case wr, ok := <-x.ch:
			if ok && wr.Err() == nil && !wr.Canceled {
				kw.mu.Unlock()
				return // a progress report, asked for the stream
			}
			x.stop() // broken: open another
			kw.idle = nil
		default:
			kw.mu.Unlock()
			return
		}
	}
	kw.mu.Unlock()
	x, err := openWatch(ctx, kw.cli, watchTarget{key: key}, clientv3.WithFilterDelete())
	if err != nil {
		return
	}
	kw.mu.Lock()
	if kw.closed || kw.idle != nil { // Close, or another wait, came first
		kw.mu.Unlock()
		x.stop()
		return
	}
	kw.idle = x
	kw.mu.Unlock()
}

// close stops the kept watches, once the Primitive's holds have ended.
func (kw *keyWatches) close() {
	kw.mu.Lock()
	kw.closed = true
	xs := kw.blk
	kw.blk = nil
	if kw.idle != nil {
		xs = append(xs, kw.idle)
		kw.idle = nil
	}
	if kw.timer != nil {
		kw.timer.Stop()
	}
	owns := kw.dispatchersLocked()
	kw.mu.Unlock()
	for _, x := range xs {
		x.stop()
	}
	for _, d := range owns {
		d.close()
	}
}

// poolPrefix returns the prefix that every key take gives for lease under
// prefix shares, and no key of another pool or lease has.
func (s *Slots) poolPrefix(prefix string, lease clientv3.LeaseID) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lease != s.lease {
		return "" // no key of this lease taken yet
	}
	// A slot's number is written last (see keys.Slot).
	return strings.TrimSuffix(keys.Slot(prefix, lease, s.pool, 0), "0")
}
