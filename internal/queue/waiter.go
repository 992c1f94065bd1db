package queue

import (
	"context"
	"errors"
	"fmt"
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
	rev     int64
	weight  int64  // in the rule: a semaphore's permits, else 1
	readRev int64  // revision of the last read that judged this waiter
	needRev int64  // a confirm read must see at least this revision
	sub     *sub   // the key's (and with a dispatcher, the blockers') registration
	free    func() // returns the key's slot to the queue's pool
	// ownPrefix, with kept watches (Queue.kw), is the prefix of the
	// own-key dispatcher that watches the key.
	ownPrefix string
	waited    bool // the waiter was not admitted by its enqueue
}

func (w *waiter) self() Entry { return Entry{Key: w.key, Rev: w.rev, Weight: w.weight} }

// errWatchBroken makes a waiter read again once its watch is back.
var errWatchBroken = errors.New("watch broken")

// wait blocks until the waiter is admitted. On return with an error the
// caller removes the key (and closes the waiter).
func (w *waiter) wait(ctx context.Context, v Verdict) error {
	if w.q.disp != nil {
		return w.waitShared(ctx, v)
	}
	return w.waitWatching(ctx, v)
}

// blockerTarget is what a waiter watches for its blockers: the one key, or
// the queue's prefix.
func blockerTarget(q *Queue, v Verdict) watchTarget {
	if len(v.Blockers) == 1 {
		return watchTarget{key: v.Blockers[0].Key}
	}
	return watchTarget{key: q.Prefix, prefix: true}
}

// errBlockerBroken says the blockers' watch is the broken one.
var errBlockerBroken = errors.New("blockers' watch broken")

// waitShared is wait with the Primitive's dispatcher. The waiter registers its key and its blockers with the Primitive's
// dispatcher. Its watch was normally created before the enqueue, so a
// registration as of the enqueue's read misses nothing and needs no read;
// when it was not (first use, or the watch broke), the waiter waits for the
// watch and reads again.
func (w *waiter) waitShared(ctx context.Context, v Verdict) error {
	b := newBackoff()
	d := w.q.disp
	for {
		if w.sub == nil {
			w.sub = d.register(w.readRev, w.self(), v.Blockers)
		}
		if w.sub == nil {
			floor, err := d.waitUp(ctx, w.k.GoneCh())
			if err != nil {
				if err := w.retryable(ctx, err, b); err != nil {
					return err
				}
				continue
			}
			w.needRev = max(w.needRev, floor)
			var done bool
			if v, done, err = w.reconfirm(ctx, v, b); done {
				return err
			}
			continue
		}
		at, err := w.await(ctx, v)
		if errors.Is(err, errWatchBroken) {
			// Read again (at or after the new watch's creation).
			w.sub.close()
			w.sub = nil
			w.readRev = -1
			continue
		}
		if err != nil {
			return err
		}
		if v.Complete {
			// The watch delivered every delete up to at, in order: at that
			// revision the waiter's key was present and the blockers left
			// weighed at most the threshold. The hold takes over the key
			// as of at.
			w.readRev = at
			return nil
		}
		b.Reset()
		if plantedBugs && planted(skipOwnershipCheck) {
			return nil // planted bug: trust the delete event alone
		}
		w.sub.close()
		w.sub = nil
		var done bool
		if v, done, err = w.reconfirm(ctx, v, b); done {
			return err
		}
	}
}

// await blocks until the blockers still present weigh at most the
// threshold, and returns the revision of the last delete that told so. It
// costs no round trip: the dispatcher counts delete events.
func (w *waiter) await(ctx context.Context, v Verdict) (int64, error) {
	var sum int64
	for _, b := range v.Blockers {
		sum += b.Weight
	}
	for {
		st := w.sub.state()
		if st.broken {
			return 0, errWatchBroken
		}
		w.needRev = max(w.needRev, st.rev)
		if st.ownGone {
			return 0, w.ownDeleted()
		}
		if sum-st.gone <= v.Threshold {
			return st.rev, nil
		}
		select {
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case <-w.k.GoneCh():
			return 0, lease.ErrExpired
		case <-w.sub.c:
		}
	}
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
	var blk *watch
	// Kept as of the wait's last read (at the grant, normally): deletes up
	// to it were this wait's own business, not another contender's.
	defer func() { kw.keepBlocker(blk, w.readRev) }()
	b := newBackoff()
	for {
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
		target := blockerTarget(w.q, v)
		if blk == nil || blk.target != target {
			blk.stop()
			// A kept watch was created before this acquire began: it
			// misses no delete after the enqueue.
			if blk = kw.takeBlocker(target); blk == nil {
				x, err := w.q.openWatch(ctx, target)
				if err != nil {
					if err := w.retryable(ctx, err, b); err != nil {
						return err
					}
					continue
				}
				blk = x
			}
		}
		// The watches deliver every delete after their creation. If both
		// were up no later than the read that judged us, nothing can have
		// been missed; otherwise read again (one read-only Txn).
		w.needRev = max(w.needRev, blk.created)
		if w.sub == nil || blk.created > w.readRev {
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
			if w.sub == nil || blockerTarget(w.q, v) != blk.target {
				continue
			}
		}
		err := w.awaitKeys(ctx, v, blk)
		if errors.Is(err, errBlockerBroken) {
			// Reopen it (at the current revision) and read again.
			blk.stop()
			blk = nil
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
		// One read-only Txn: is the waiter's key still there, and nothing
		// older? The delete of the key ahead does not say so: a key
		// older than it may remain (a waiter ahead that gave up).
		var done bool
		if v, done, err = w.reconfirm(ctx, v, b); done {
			return err
		}
	}
}

// awaitKeys blocks until the blockers still present weigh at most the
// threshold, or the waiter's own key goes. It costs no round trip: it only
// counts delete events. Deletes the watch delivered before this wait (a
// kept watch) are of keys deleted before the blockers were read, so at or
// before their creation: the revision check skips them.
func (w *waiter) awaitKeys(ctx context.Context, v Verdict, blk *watch) error {
	remaining := make(map[string]Entry, len(v.Blockers))
	var sum int64
	for _, b := range v.Blockers {
		remaining[b.Key] = b
		sum += b.Weight
	}
	for sum > v.Threshold {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-w.k.GoneCh():
			return lease.ErrExpired
		case <-w.sub.c:
			st := w.sub.state()
			if st.broken {
				w.sub.close()
				w.sub = nil
				w.readRev = -1
				return errWatchBroken
			}
			w.needRev = max(w.needRev, st.rev)
			if st.ownGone {
				return w.ownDeleted()
			}
		case wr, ok := <-blk.ch:
			if !ok || wr.Err() != nil {
				return errBlockerBroken
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
				}
			}
		}
	}
	return nil
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
		return w.q.Rule.Judge(w.self(), ranges(resp.Responses[1:])), nil
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

// remove deletes the waiter's key if it is still this waiter's, on a bounded
// context (never the client's own, which may never end).
func (w *waiter) remove() {
	if w.q.Client.Ctx().Err() != nil {
		return // the client is closed: the key goes with its lease
	}
	ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
	defer cancel()
	_, err := w.q.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(w.key), "=", w.rev)).
		Then(clientv3.OpDelete(w.key)).Commit()
	if err != nil {
		w.k.Orphan(w.key, w.rev)
		w.q.logger().Warn("could not remove waiter key; will retry after the next lease renewal", zap.String("key", w.key), zap.Error(err))
		return
	}
	if w.free != nil {
		w.free()
	}
}

// removeByKey deletes the waiter's key whatever its revision, for when the
// enqueue Txn failed and its outcome is unknown. The key's slot is never
// given back, so the key can only be this waiter's. The put may still land
// after the delete (a Txn cut short by its context can still be applied),
// so the keeper deletes the key again after its renewals, for one TTL.
func (w *waiter) removeByKey() {
	ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
	defer cancel()
	_, err := w.q.Client.Delete(ctx, w.key)
	w.k.Orphan(w.key, 0)
	if err != nil {
		w.q.logger().Warn("could not remove waiter key; will retry after the next lease renewal", zap.String("key", w.key), zap.Error(err))
	}
}
