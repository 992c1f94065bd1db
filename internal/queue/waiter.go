package queue

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/internal/backoff"
	"github.com/etcdlock/etcdlock/internal/lease"
)

// waiter is one enqueued key on its way to becoming a hold.
type waiter struct {
	q       *Queue
	k       *lease.Keeper
	key     string
	suffix  string // ends key (Request.KeySuffix)
	rev     int64
	weight  int64  // in the rule: a semaphore's permits, else 1
	readRev int64  // revision of the last read that judged this waiter
	needRev int64  // a confirm read must see at least this revision
	sub     *sub   // the key's (and with a dispatcher, the blockers') registration
	free    func() // returns the key's slot to the queue's pool
	// ownPrefix, with kept watches (Queue.kw), is the prefix of the
	// own-key dispatcher that watches the key.
	ownPrefix string
	waited    bool        // the waiter was not admitted by its enqueue
	dl        *delayState // with lock-delay: the key ahead (see lockdelay.go)
}

func (w *waiter) self() Entry { return Entry{Key: w.key, Rev: w.rev, Weight: w.weight} }

// errWatchBroken makes a waiter read again once its watch is back.
var errWatchBroken = errors.New("watch broken")

// wait blocks until the waiter is admitted. On return with an error the
// caller removes the key (and closes the waiter).
func (w *waiter) wait(ctx context.Context, v Verdict) error { return w.waitWatching(ctx, v) }

// maxBlockerWatches bounds the watches a waiter keeps on its blockers: a
// verdict that names more (a semaphore whose limit is that many requests)
// has the waiter watch the queue's prefix instead, which sends it every
// release of the queue.
const maxBlockerWatches = 8

// blockerTargets is what a waiter watches for v's blockers: each key, or
// the queue's prefix when they are too many.
func blockerTargets(q *Queue, v Verdict) []watchTarget {
	if len(v.Blockers) > maxBlockerWatches {
		return []watchTarget{{key: q.Prefix, prefix: true}}
	}
	ts := make([]watchTarget, len(v.Blockers))
	for i, b := range v.Blockers {
		ts[i] = watchTarget{key: b.Key}
	}
	return ts
}

// watching reports whether blk watches exactly ts, in order.
func watching(blk []*watch, ts []watchTarget) bool {
	if len(blk) != len(ts) {
		return false
	}
	for i, x := range blk {
		if x.target != ts[i] {
			return false
		}
	}
	return true
}

// newest returns the latest creation revision of blk's watches.
func newest(blk []*watch) int64 {
	var rev int64
	for _, x := range blk {
		rev = max(rev, x.created)
	}
	return rev
}

// errBlockerBroken says a blocker's watch is the broken one.
var errBlockerBroken = errors.New("blockers' watch broken")

// retarget makes blk watch ts: it keeps the watches of blk on a target in
// ts, takes the Primitive's kept watch if it is on another, opens the rest
// at the server's current revision, and stops the watches no longer
// needed. On error the watches it has are returned with it, for the next
// attempt.
func (w *waiter) retarget(ctx context.Context, blk []*watch, ts []watchTarget) ([]*watch, error) {
	kw := w.q.kw
	next := make([]*watch, 0, len(ts))
	var err error
	for _, t := range ts {
		i := slices.IndexFunc(blk, func(x *watch) bool { return x != nil && x.target == t })
		switch {
		case i >= 0:
			next = append(next, blk[i])
			blk[i] = nil
			continue
		case err != nil:
			continue
		}
		// A kept watch was created before this acquire began: it misses
		// no delete after the enqueue.
		x := kw.takeBlocker(t)
		if x == nil {
			if x, err = w.q.openWatch(ctx, t); err != nil {
				continue
			}
		}
		next = append(next, x)
	}
	for _, x := range blk {
		x.stop() // nil when moved to next
	}
	kw.dropBlockers() // not this wait's: they would only bring unwanted deletes
	if err == nil && len(ts) > 0 && (len(ts) > 1 || ts[0].prefix) {
		// The wait will stop these watches (waitWatching keeps a lone
		// key's only): keep the stream up for the next wait.
		kw.holdStream(ctx, w.q.Prefix)
	}
	return next, err
}

// waitWatching is wait with the Primitive's kept watches (see keyWatches):
// its own key registered with the own-key dispatcher, and a watch on its
// blockers (the key just ahead, for a mutex: no herd), kept for the next
// wait.
//
// Round trips in the common case, a contender looping on a lock: none
// before the delete of the key ahead, whose watch was kept from the last
// wait and the own-key watch up since before the enqueue, and one read
// after it (reconfirm). A new blocker watch is created on the shared
// stream (no raft round), and costs a read when etcd's revision moved
// between the enqueue and its creation; the own-key watch, when it was not
// up since the enqueue (the first wait, or after it broke), costs one too.
func (w *waiter) waitWatching(ctx context.Context, v Verdict) error {
	kw := w.q.kw
	var blk []*watch // the watches on v's blockers, in v's order
	// Keep the watch of a lone blocker for the next wait: contenders
	// looping on a lock come back under the same names, in the same
	// order. A kept watch gets every delete of its key until the next
	// wait takes or stops it (retarget), so a window's watches are
	// stopped: their deletes during the hold would mostly go to waste.
	defer func() {
		if len(blk) == 1 {
			kw.keepBlockers(blk, w.readRev) // as of the wait's last read: see contended
			return
		}
		for _, x := range blk {
			x.stop()
		}
	}()
	b := newBackoff()
	for {
		w.delayNote(ctx, v)
		var own *dispatcher
		if w.sub == nil {
			// Registered as of the last read that saw the key (the
			// enqueue's, at first): nil if the watch was not up since.
			own = kw.own(w.ownPrefix)
			w.sub = own.register(w.readRev, w.self(), nil)
		}
		if w.sub == nil {
			floor, err := own.waitUp(ctx, w.k.GoneCh())
			if err != nil {
				if err := w.retryable(ctx, err, b); err != nil {
					return err
				}
				continue
			}
			w.needRev = max(w.needRev, floor)
			w.readRev = -1 // read (below) at or after floor, then register
		}
		if ts := blockerTargets(w.q, v); !watching(blk, ts) {
			var err error
			if blk, err = w.retarget(ctx, blk, ts); err != nil {
				if err := w.retryable(ctx, err, b); err != nil {
					return err
				}
				continue
			}
		}
		// The watches deliver every delete after their creation. If all
		// were up no later than the read that judged us, nothing can have
		// been missed; otherwise read again (one read-only Txn).
		created := newest(blk)
		w.needRev = max(w.needRev, created)
		if w.sub == nil || created > w.readRev {
			var err error
			if v, err = w.confirm(ctx); err != nil {
				if err := w.retryable(ctx, err, b); err != nil {
					return err
				}
				continue
			}
			if v.Admitted {
				return nil
			}
			if v.Err != nil {
				return v.Err
			}
			if w.sub == nil || !watching(blk, blockerTargets(w.q, v)) {
				continue
			}
		}
		broken, err := w.awaitKeys(ctx, v, blk)
		if errors.Is(err, errBlockerBroken) {
			// Reopen it (at the current revision) and read again.
			blk[broken].stop()
			blk = slices.Delete(blk, broken, broken+1)
			err = errWatchBroken
		}
		if errors.Is(err, errWatchBroken) {
			if err := w.retryable(ctx, err, b); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		b.Reset()
		if plantedBugs && planted(skipOwnershipCheck) {
			return nil // planted bug: trust the delete event alone
		}
		// One read-only Txn: is the waiter's key still there, and what
		// keeps it out now? The delete of a blocker does not say: a key
		// older than it may remain (a waiter ahead that gave up), or the
		// rule may need more of them gone.
		var done bool
		if v, done, err = w.reconfirm(ctx, v, b); done {
			return err
		}
	}
}

// awaitKeys blocks until the blockers still present weigh at most the
// threshold, or the waiter's own key goes. It costs no round trip: it only
// counts delete events. Deletes a watch delivered before this wait (a kept
// watch) are of keys deleted before the blockers were read, so at or
// before their creation: the revision check skips them. When a blocker's
// watch broke it returns errBlockerBroken and that watch's index in blk.
func (w *waiter) awaitKeys(ctx context.Context, v Verdict, blk []*watch) (int, error) {
	remaining := make(map[string]Entry, len(v.Blockers))
	var sum int64
	for _, b := range v.Blockers {
		remaining[b.Key] = b
		sum += b.Weight
	}
	// The select's cases: ctx, the lease, the own key, then each watch.
	const fixed = 3
	cases := make([]reflect.SelectCase, fixed, fixed+len(blk))
	cases[0] = reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}
	cases[1] = reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.k.GoneCh())}
	cases[2] = reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.sub.c)}
	for _, x := range blk {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(x.ch)})
	}
	for sum > v.Threshold {
		i, rv, ok := reflect.Select(cases)
		switch i {
		case 0:
			return 0, context.Cause(ctx)
		case 1:
			return 0, lease.ErrExpired
		case 2:
			st := w.sub.state()
			if st.broken {
				w.sub.close()
				w.sub = nil
				w.readRev = -1
				return 0, errWatchBroken
			}
			w.needRev = max(w.needRev, st.rev)
			if st.ownGone {
				return 0, w.ownDeleted()
			}
			continue
		}
		var wr clientv3.WatchResponse
		if ok {
			wr = rv.Interface().(clientv3.WatchResponse)
		}
		if !ok || wr.Err() != nil {
			return i - fixed, errBlockerBroken
		}
		w.needRev = max(w.needRev, wr.Header.Revision)
		for _, ev := range wr.Events {
			if ev.Type != mvccpb.DELETE {
				continue
			}
			// A delete at or before the blocker's creation is of an
			// earlier key of the same (reused) name.
			if b, ok := remaining[string(ev.Kv.Key)]; ok && ev.Kv.ModRevision > b.Rev {
				delete(remaining, string(ev.Kv.Key))
				sum -= b.Weight
				w.delaySeen(b, ev.Kv.ModRevision)
			}
		}
	}
	return 0, nil
}

// ownDeleted tells why the waiter's key vanished: its lease is gone, or
// another client deleted it. It costs one TimeToLive, on this rare path only.
func (w *waiter) ownDeleted() error {
	if err := w.q.whyDeleted(w.k); errors.Is(err, lease.ErrExpired) {
		return err
	}
	return fmt.Errorf("%w: waiter key %s", ErrDeleted, w.key)
}

// confirm reads, in one read-only Txn, the waiter's own key and the rule's
// reads bounded by the waiter's revision, and judges it again.
//
// The read may be serializable (the rules' confirm reads are): it is then
// served by the member from its own state, with no raft round and without
// waiting behind writes in flight. That is as good as a linearizable read
// here, provided the member's state is at least at w.needRev, the revision
// of the watch events that woke us: the state it returns is then etcd's true
// state at a revision committed during this Lock call, which is when the
// grant takes effect. A member that is behind is simply asked again.
func (w *waiter) confirm(ctx context.Context) (Verdict, error) {
	ops := append([]clientv3.Op{clientv3.OpGet(w.key, clientv3.WithKeysOnly(), clientv3.WithSerializable())}, w.q.Rule.Reads(w.q.Prefix, w.rev)...)
	marker := w.delayOps() // with lock-delay, after a wait: the key ahead's marker
	ops = append(ops, marker...)
	var b *backoff.Backoff
	for {
		resp, err := w.q.Client.Txn(ctx).Then(ops...).Commit()
		if err == nil {
			err = wellFormed(resp, answer{len(ops), 0})
		}
		if err != nil {
			return Verdict{}, err
		}
		if resp.Header.Revision < w.needRev {
			if b == nil {
				b = backoff.New(time.Millisecond, time.Second)
			}
			if err := b.Sleep(ctx); err != nil {
				return Verdict{}, err
			}
			continue
		}
		own := resp.Responses[0].GetResponseRange()
		if len(own.Kvs) == 0 || own.Kvs[0].CreateRevision != w.rev {
			return Verdict{}, w.ownDeleted()
		}
		w.readRev = resp.Header.Revision
		return w.delayJudge(ctx, w.q.Rule.Judge(w.self(), ranges(resp.Responses[1:len(ops)-len(marker)])), resp, len(marker) > 0)
	}
}

// reconfirm reads again (see confirm). It reports done, with the wait's
// result, once the waiter is admitted (nil) or failed; otherwise it returns
// the verdict to go on waiting with: the new one, or after a transient
// error and a pause, the old one.
func (w *waiter) reconfirm(ctx context.Context, v Verdict, b *backoff.Backoff) (Verdict, bool, error) {
	nv, err := w.confirm(ctx)
	switch {
	case err != nil:
		if err := w.retryable(ctx, err, b); err != nil {
			return v, true, err
		}
		return v, false, nil
	case nv.Admitted:
		return nv, true, nil
	case nv.Err != nil:
		return nv, true, nv.Err
	}
	return nv, false, nil
}

// retryable returns nil after a pause when err is a transient etcd or watch
// error, and err (or ctx's cause) otherwise.
func (w *waiter) retryable(ctx context.Context, err error, b *backoff.Backoff) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if errors.Is(err, lease.ErrExpired) || errors.Is(err, ErrDeleted) || errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return err
	}
	if w.k.Gone() != nil {
		return lease.ErrExpired
	}
	if w.q.Client.Ctx().Err() != nil {
		return ErrClientClosed
	}
	w.readRev = -1
	w.q.logger().Debug("retrying wait", zap.String("key", w.key), zap.Error(err))
	return b.Sleep(ctx)
}

func (q *Queue) logger() *zap.Logger {
	if q.Logger == nil {
		return zap.NewNop()
	}
	return q.Logger
}

// close removes the waiter's registration.
func (w *waiter) close() {
	w.sub.close()
	w.sub = nil
}

// remove deletes the waiter's key if it is still this waiter's, on ctx, the
// acquire's, bounded by CleanupTimeout (never the client's own context,
// which may never end). Once ctx has ended (the caller gave up, and gets
// its answer now, even with etcd unreachable) or the delete fails, the key
// is the lease keeper's to delete, in the background; until then it keeps
// its place in the queue, but it can grant nothing: no hold is made of it.
func (w *waiter) remove(ctx context.Context) {
	if w.q.Client.Ctx().Err() != nil {
		return // the client is closed: the key goes with its lease
	}
	// With lock-delay the key's holding record goes with it: a waiter
	// that gives up never held (see lockdelay.go, giveUpOps).
	with := w.giveUpOps()
	if ctx.Err() != nil {
		w.k.OrphanWith(w.key, w.rev, with, w.free)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, CleanupTimeout)
	defer cancel()
	_, err := w.q.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(w.key), "=", w.rev)).
		Then(append([]clientv3.Op{clientv3.OpDelete(w.key)}, with...)...).Commit()
	if err != nil {
		w.k.OrphanWith(w.key, w.rev, with, w.free)
		w.q.logger().Warn("could not remove waiter key; the lease keeper will", zap.String("key", w.key), zap.Error(err))
		return
	}
	if w.free != nil {
		w.free()
	}
}

// removeByKey has the keeper delete the waiter's key whatever its revision,
// for when the enqueue Txn failed and its outcome is unknown: the put may
// still land after any delete (a Txn cut short by its context can still be
// applied), so the keeper deletes the key at once, in the background, and
// again after its renewals, for one TTL. The key's slot is never given
// back, so the key can only be this waiter's.
func (w *waiter) removeByKey() {
	if w.q.Client.Ctx().Err() != nil {
		return // the client is closed: the key, if put, goes with its lease
	}
	w.k.OrphanWith(w.key, 0, w.q.heldDelete(w.key), nil)
}
