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

	"github.com/etcdlock/etcdlock/internal/bugs"
	"github.com/etcdlock/etcdlock/internal/lease"
)

// waiter is one enqueued key on its way to becoming a hold.
type waiter struct {
	q       *Queue
	k       *lease.Keeper
	key     string
	rev     int64
	readRev int64  // revision of the last read that judged this waiter
	needRev int64  // a confirm read must see at least this revision
	sub     *sub   // with a dispatcher: the key's and blockers' registration
	own     *watch // without: watch on the own key, kept into the hold
	free    func() // returns the key's slot to the queue's pool
}

func (w *waiter) self() Entry { return Entry{Key: w.key, Rev: w.rev, Weight: 1} }

// errWatchBroken makes a waiter read again once its watch is back.
var errWatchBroken = errors.New("etcdlock: watch broken")

// wait blocks until the waiter is admitted. On return with an error the
// caller removes the key (and closes the waiter).
func (w *waiter) wait(ctx context.Context, v Verdict) error {
	if w.q.disp != nil {
		return w.waitShared(ctx, v)
	}
	return w.waitWatching(ctx, v)
}

// watch is one etcd watch that this package opened and must cancel.
type watch struct {
	ch      clientv3.WatchChan
	cancel  context.CancelFunc
	created int64 // server revision when the watch was created; events after it are delivered
	target  string
	prefix  bool
}

func (x *watch) stop() {
	if x != nil {
		x.cancel()
	}
}

// openWatch watches deletes of target (a key, or a prefix) from the server's
// current revision, and waits for the created reply, so that no event after
// x.created is missed and the watcher starts synced.
//
// The watch outlives ctx (a waiter's own watch goes on into its hold), but
// ctx can end its creation: clientv3's Watch blocks until the server has
// answered, which it never does while etcd is unreachable.
func (q *Queue) openWatch(ctx context.Context, target string, prefix bool) (*watch, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	stop := context.AfterFunc(ctx, cancel)
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify(), clientv3.WithFilterPut()}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	x := &watch{ch: q.Client.Watch(wctx, target, opts...), cancel: cancel, target: target, prefix: prefix}
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
		return nil, errors.New("etcdlock: watch closed before it was created")
	}
	x.created = wr.Header.Revision
	return x, nil
}

func blockerTarget(q *Queue, v Verdict) (string, bool) {
	if len(v.Blockers) == 1 {
		return v.Blockers[0].Key, false
	}
	return q.Prefix, true
}

// errBlockerBroken says the blockers' watch is the broken one.
var errBlockerBroken = errors.New("etcdlock: blockers' watch broken")

// waitShared is wait with the Primitive's dispatcher. The waiter registers its key and its blockers with the Primitive's
// dispatcher. Its watch was normally created before the enqueue, so a
// registration as of the enqueue's read misses nothing and needs no read;
// when it was not (first use, or the watch broke), the waiter waits for the
// watch and reads again.
func (w *waiter) waitShared(ctx context.Context, v Verdict) error {
	backoff := newBackoff()
	d := w.q.disp
	for {
		if w.sub == nil {
			w.sub = d.register(w.readRev, w.self(), v.Blockers)
		}
		if w.sub == nil {
			floor, err := d.waitUp(ctx, w.k.GoneCh())
			if err != nil {
				if err := w.retryable(ctx, err, backoff); err != nil {
					return err
				}
				continue
			}
			w.needRev = max(w.needRev, floor)
			var done bool
			if v, done, err = w.reconfirm(ctx, v, backoff); done {
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
		backoff = newBackoff()
		if bugs.Compiled && bugs.On(bugs.SkipOwnershipCheck) {
			return nil // planted bug: trust the delete event alone
		}
		w.sub.close()
		w.sub = nil
		var done bool
		if v, done, err = w.reconfirm(ctx, v, backoff); done {
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

// waitWatching is wait with watches of the waiter's own: one on its key,
// one on its blockers (the key just ahead, for a mutex: no herd).
func (w *waiter) waitWatching(ctx context.Context, v Verdict) error {
	var blk *watch
	defer func() { blk.stop() }()
	backoff := newBackoff()
	for {
		if w.own == nil {
			own, err := w.q.openWatch(ctx, w.key, false)
			if err != nil {
				if err := w.retryable(ctx, err, backoff); err != nil {
					return err
				}
				continue
			}
			w.own = own
		}
		target, prefix := blockerTarget(w.q, v)
		if blk == nil || blk.target != target || blk.prefix != prefix {
			blk.stop()
			blk = nil
			b, err := w.q.openWatch(ctx, target, prefix)
			if err != nil {
				if err := w.retryable(ctx, err, backoff); err != nil {
					return err
				}
				continue
			}
			blk = b
		}
		// The watches deliver every delete after their created revision. If
		// both were created no later than the read that judged us, nothing
		// can have been missed; otherwise read again.
		w.needRev = max(w.needRev, blk.created, w.own.created)
		if blk.created > w.readRev || w.own.created > w.readRev {
			var err error
			if v, err = w.confirm(ctx); err != nil {
				if err := w.retryable(ctx, err, backoff); err != nil {
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
			if t, p := blockerTarget(w.q, v); t != blk.target || p != blk.prefix {
				continue
			}
		}
		err := w.awaitWatch(ctx, v, blk)
		if errors.Is(err, errBlockerBroken) {
			// Reopen it (at the current revision) and read again.
			blk.stop()
			blk = nil
			err = errWatchBroken
		}
		if errors.Is(err, errWatchBroken) {
			if err := w.retryable(ctx, err, backoff); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		backoff = newBackoff()
		if bugs.Compiled && bugs.On(bugs.SkipOwnershipCheck) {
			return nil // planted bug: trust the delete event alone
		}
		var done bool
		if v, done, err = w.reconfirm(ctx, v, backoff); done {
			return err
		}
	}
}

// awaitWatch blocks until the blockers still present weigh at most the
// threshold. It costs no round trip: it only counts delete events.
func (w *waiter) awaitWatch(ctx context.Context, v Verdict, blk *watch) error {
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
		case wr, ok := <-w.own.ch:
			if !ok || wr.Err() != nil {
				w.own.stop()
				w.own = nil
				return errWatchBroken
			}
			w.needRev = max(w.needRev, wr.Header.Revision)
			if hasDelete(wr.Events, w.rev) {
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

// hasDelete reports whether evs delete a key created at rev. Key names are
// reused, and a member that lags behind may still deliver the delete of an
// earlier key of the same name: a delete at or before rev is that.
func hasDelete(evs []*clientv3.Event, rev int64) bool {
	for _, ev := range evs {
		if ev.Type == mvccpb.DELETE && ev.Kv.ModRevision > rev {
			return true
		}
	}
	return false
}

// ownDeleted tells why the waiter's key vanished: its lease is gone, or
// another client deleted it. It costs one TimeToLive, on this rare path only.
func (w *waiter) ownDeleted() error {
	if err := w.q.whyDeleted(w.k); errors.Is(err, lease.ErrExpired) {
		return err
	}
	return fmt.Errorf("%w: waiter key %s", ErrDeleted, w.key)
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
	var b *backoff
	for {
		resp, err := w.q.Client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return Verdict{}, err
		}
		if resp.Header.Revision < w.needRev {
			if b == nil {
				b = &backoff{d: time.Millisecond}
			}
			if err := b.sleep(ctx); err != nil {
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
func (w *waiter) reconfirm(ctx context.Context, v Verdict, b *backoff) (Verdict, bool, error) {
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
func (w *waiter) retryable(ctx context.Context, err error, b *backoff) error {
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
	return b.sleep(ctx)
}

func (q *Queue) logger() *zap.Logger {
	if q.Logger == nil {
		return zap.NewNop()
	}
	return q.Logger
}

// close removes the waiter's registration and stops its watch.
func (w *waiter) close() {
	w.sub.close()
	w.sub = nil
	w.own.stop()
	w.own = nil
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

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 20 * time.Millisecond} }

func (b *backoff) sleep(ctx context.Context) error {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(b.d*2, time.Second)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
