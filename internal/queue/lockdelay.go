package queue

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/internal/etcdcmp"
)

// Lock-delay (see package lock's WithLockDelay): after an unclean loss of
// the head of a queue (its key's lease expired or was revoked, or the key
// was deleted by another client) no waiter is admitted until a delay has
// passed since the loss; after a clean release, at once.
//
//   - Clean ends are marked. A release puts, in the same Txn as its
//     delete, a marker key on the hold's lease: markerDir + the key's
//     name, whose value is the key's create revision. It is an extra op,
//     not an extra round trip. A delete with no marker written in its
//     revision is unclean. A waiter's removal of its key (its context
//     ended) writes none, unless the waiter itself put the delay key for
//     the loss ahead of it: a waiter that gives up just as it reaches the
//     head held the lock in etcd's eyes, and may have been the only one to
//     see an unclean loss before it; the waiter behind then delays. One
//     that recorded that loss with its whole delay leaves nothing unseen,
//     and marks its end clean: else waiters whose Locks end within the
//     delay would each give up at the head in turn, each delaying the
//     next, and the delay would never end.
//   - The waiter just behind tells. Its confirm read after the key ahead
//     went also reads that key's marker (an extra op in the read it makes
//     anyway). Marker present and naming the key: clean, admitted. Absent:
//     the key's lease may have been revoked since a clean release (a Close
//     just after Unlock), so it reads the marker as of the delete's
//     revision: one more read, on this path only. That revision is the
//     watch event's; when the delete came before the watch, a watch of the
//     key's history since its creation finds it. Absent then too (or that
//     history compacted): unclean.
//   - The loss is recorded for everyone. The waiter that found the loss
//     puts the queue's delay key (delayDir + the queue's name) on a lease
//     it grants with the rest of the delay as TTL, counted from when the
//     delete's event arrived (from its read if it saw no event): a Grant
//     and a Txn, on this path only. Every acquire of a queue with
//     lock-delay reads the delay key with the rule's reads (and its
//     comparisons: TryIf) and, while it exists, waits for it like for a
//     key ahead; etcd deletes it when its lease expires, so the delay is
//     measured by etcd's lease clock, never earlier than the TTL. The
//     waiter that recorded it reads no older state from then on, from
//     whichever member (see needDelayKey).
//
//   - A loss nobody saw is found by the next acquirer. The enqueue Txn of
//     a queue with lock-delay also puts a lease-less holding record of the
//     key (heldDir + the key's name, put in the key's create revision, so
//     its mod revision is the key's create revision) and reads the oldest
//     record under the queue's name; a release deletes the record in its
//     Txn, a waiter that gives up with its key (itself, or the lease
//     keeper). Two ops in the Txn the acquire sends anyway: no round trip.
//     An acquirer that the rule admits (or keeps out by the delay key
//     alone) and that reads a record older than its key has found a key
//     that was at the head and ended with no release: its lease expired,
//     or another client deleted it, while no waiter watched. It records
//     the loss with the whole delay counted from when the enqueue's answer
//     arrived (after the loss, so never early; a delay recorded already
//     is moved to its lease, which ends no sooner), deleting the record in
//     the same Txn, and waits: a Grant and a Txn, on this path only. A waiter
//     that records a loss it saw deletes the lost key's record with the
//     delay key. A waiter whose key ahead went while an older key lived
//     (the key ahead never held: its lease expired while it waited)
//     deletes that key's record, so that no later acquirer takes it for a
//     loss.
//
// A holder whose key is deleted by another client records the loss too
// (see package lock). A waiter that gives up is no loss: it never held;
// the loss it may have been the first to see keeps its record. A
// holder without lock-delay writes no marker and no record, so its
// releases count as unclean to waiters that have it, and its losses go
// unseen by newcomers: set it on every process of a name.

const (
	// markerDir holds the clean-release markers; no kind is named so.
	markerDir = "released/"
	// delayDir holds the queues' delay keys; no kind is named so.
	delayDir = "lockdelay/"
	// heldDir holds the keys' holding records; no kind is named so.
	heldDir = "lockdelay-held/"
)

// lockDelay is a Queue's lock-delay.
type lockDelay struct {
	d    time.Duration
	key  string // the queue's delay key
	held string // the prefix of the queue's holding records
}

// SetLockDelay turns on lock-delay d for q (see above): it wraps q's rule
// so that the delay key keeps waiters out, and has releases mark clean
// ends. Call it before any acquire through q.
func (q *Queue) SetLockDelay(d time.Duration) {
	key := q.Namespace + delayDir + strings.TrimSuffix(strings.TrimPrefix(q.Prefix, q.Namespace), "/")
	q.delay = &lockDelay{d: d, key: key, held: q.heldKey(q.Prefix)}
	q.Rule = delayRule{Rule: q.Rule, key: key}
}

// DelayKey returns the queue's delay key, or "" without lock-delay.
func (q *Queue) DelayKey() string {
	if q.delay == nil {
		return ""
	}
	return q.delay.key
}

// markerKey returns the clean-release marker of key.
func (q *Queue) markerKey(key string) string {
	return q.Namespace + markerDir + strings.TrimPrefix(key, q.Namespace)
}

// heldKey returns the holding record of key (or, for the queue's prefix,
// the prefix of its records).
func (q *Queue) heldKey(key string) string {
	return q.Namespace + heldDir + strings.TrimPrefix(key, q.Namespace)
}

// heldOf returns the key whose holding record is rec.
func (q *Queue) heldOf(rec string) string {
	return q.Namespace + strings.TrimPrefix(rec, q.Namespace+heldDir)
}

// heldN is the number of ops the enqueue Txn adds with lock-delay: the put
// of the holding record (after the key's put) and the read of the oldest
// record (last).
func (q *Queue) heldN() int {
	if q.delay == nil {
		return 0
	}
	return 2
}

// heldPut returns the put of key's holding record: none without lock-delay.
func (q *Queue) heldPut(key string) []clientv3.Op {
	if q.delay == nil {
		return nil
	}
	return []clientv3.Op{clientv3.OpPut(q.heldKey(key), "")}
}

// heldRead returns the read of the queue's oldest holding records (up to
// heldReadMax, so that one acquirer clears the records of several losses
// at once, not one delay per record): none without lock-delay.
func (q *Queue) heldRead() []clientv3.Op {
	if q.delay == nil {
		return nil
	}
	return []clientv3.Op{clientv3.OpGet(q.delay.held, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend), clientv3.WithLimit(heldReadMax))}
}

// heldReadMax bounds the holding records an enqueue reads. etcd walks the
// records either way (it drops the limit when sorting by mod revision);
// the limit bounds the answer.
const heldReadMax = 16

// heldDelete returns the delete of key's holding record: none without
// lock-delay.
func (q *Queue) heldDelete(key string) []clientv3.Op {
	if q.delay == nil {
		return nil
	}
	return []clientv3.Op{clientv3.OpDelete(q.heldKey(key))}
}

// heldDrop returns the delete of the holding record of e, guarded by its
// mod revision (e's create revision), so that it never deletes the record
// of a later key of the same name.
func (q *Queue) heldDrop(e Entry) clientv3.Op {
	rec := q.heldKey(e.Key)
	return clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(rec), "=", e.Rev)}, []clientv3.Op{clientv3.OpDelete(rec)}, nil)
}

// staleHeld judges the enqueue's read of the oldest holding record (held):
// a record older than the waiter's key, while no key older than it lives
// (v admits it, or keeps it out for the delay key alone), is a key that
// was at the head and ended with no release: an unclean loss nobody saw.
// It records the loss, deleting the record, and returns the verdict to
// wait for the delay key. A Grant and a Txn, on this path only.
func (w *waiter) staleHeld(ctx context.Context, v Verdict, held *pb.RangeResponse) Verdict {
	dl := w.q.delay
	if dl == nil || held == nil || len(held.Kvs) == 0 || held.Kvs[0].ModRevision >= w.rev {
		return v
	}
	if !v.Admitted && (v.Err != nil || len(v.Blockers) != 1 || v.Blockers[0].Key != dl.key) {
		return v // a key ahead lives: its waiter tells (delayJudge)
	}
	found := time.Now() // after the loss, which the Txn saw
	// Every record older than the waiter's key is stale (no key older than
	// it lives): one delay covers them all.
	var gone []Entry
	for _, kv := range held.Kvs {
		if kv.ModRevision < w.rev {
			gone = append(gone, Entry{Key: w.q.heldOf(string(kv.Key)), Rev: kv.ModRevision})
		}
	}
	rev, _, err := w.q.recordLoss(ctx, 0, dl.d-time.Since(found), gone, true)
	if err != nil {
		return Verdict{Err: err}
	}
	w.needDelayKey(rev)
	// The whole delay from now, on record (recordLoss with extend moves
	// any delay key to it): see delayState.recorded.
	if w.dl == nil {
		w.dl = &delayState{}
	}
	w.dl.recorded = true
	w.q.logger().Info("lock-delay after an unclean loss found at enqueue", zap.String("lost", gone[0].Key), zap.Int64("create revision", gone[0].Rev), zap.Int("records", len(gone)), zap.Duration("delay", dl.d))
	return Verdict{Blockers: []Entry{{Key: dl.key, Rev: rev, Weight: 1}}}
}

// needDelayKey has the waiter's next confirm reads see at least revision
// rev, the delay key's create revision, once it has recorded a loss (or
// found it recorded) and waits for that key. Those reads are
// serializable: a member that has not applied the key's put yet shows
// the key ahead gone and no delay key, which admits the waiter at once,
// whatever delay it just recorded. Nothing else bounds them above the
// waiter's last read: the watch on the delay key, opened on such a
// member, was created at that member's revision. A state at rev or later
// has the key until its lease ends, and the delay with it. It costs no
// request: a member behind is asked again, as one behind a watch event is
// (see confirm).
func (w *waiter) needDelayKey(rev int64) {
	w.needRev = max(w.needRev, rev)
}

// giveUpOps are the ops that go with the delete of the waiter's key when
// it gives up: with lock-delay, the delete of its holding record (it never
// held), and, when it put the delay key for the loss ahead of it itself
// (delayState.recorded), the marker of a clean end. A head waiter that
// gives up without a marker makes the waiter behind delay again: with
// waiters whose Locks time out within the delay, each one gave up at the
// head in turn and the delay never ended.
func (w *waiter) giveUpOps() []clientv3.Op {
	ops := w.q.heldDelete(w.key)
	if w.dl != nil && w.dl.recorded {
		ops = append(ops, w.q.markerOps(w.key, w.rev, w.k.ID())...)
	}
	return ops
}

// markerOps returns the op that marks the end of the key of create
// revision rev on lease as clean: none without lock-delay.
func (q *Queue) markerOps(key string, rev int64, lease clientv3.LeaseID) []clientv3.Op {
	if q.delay == nil {
		return nil
	}
	return []clientv3.Op{clientv3.OpPut(q.markerKey(key), strconv.FormatInt(rev, 10), clientv3.WithLease(lease))}
}

// delayRule is a rule with lock-delay: it adds the delay key to the
// rule's comparisons and reads, and keeps out a waiter that the rule
// admits while that key exists.
type delayRule struct {
	Rule
	key string
}

func (r delayRule) Reads(prefix string, maxRev int64) []clientv3.Op {
	get := clientv3.OpGet(r.key, clientv3.WithKeysOnly())
	if maxRev != 0 {
		get = clientv3.OpGet(r.key, clientv3.WithKeysOnly(), clientv3.WithSerializable())
	}
	return append(r.Rule.Reads(prefix, maxRev), get)
}

func (r delayRule) Judge(self Entry, resps []*pb.RangeResponse) Verdict {
	n := len(r.Rule.Reads("", 0))
	v := r.Rule.Judge(self, resps[:n])
	if !v.Admitted || v.Err != nil {
		return v
	}
	if kvs := resps[n].Kvs; len(kvs) > 0 {
		return Verdict{Blockers: []Entry{{Key: r.key, Rev: kvs[0].CreateRevision, Weight: 1}}}
	}
	return v
}

func (r delayRule) TryIf(prefix string) []clientv3.Cmp {
	cmps := r.Rule.TryIf(prefix)
	if cmps == nil {
		return nil
	}
	return append(cmps, etcdcmp.CreateRevision(r.key, 0, false))
}

// delayState is a waiter's view of the keys ahead, for lock-delay.
type delayState struct {
	ahead   Entry     // the key the last verdict waited for
	goneRev int64     // the revision of its delete, from its watch event; 0 if unseen
	goneAt  time.Time // when that event arrived
	// recorded: this waiter put the delay key for the loss it found,
	// with that loss's whole delay. It can then never hold before the
	// delay ends, and every loss ahead of it is on record, so its key's
	// end is clean whenever it gives up (see giveUpOps).
	recorded bool
}

// delayNote records the key that v keeps the waiter behind, if any. A key
// older than the one recorded before means that one went without ever
// holding: its record is dropped (see dropNeverHeld).
func (w *waiter) delayNote(ctx context.Context, v Verdict) {
	if w.q.delay == nil || len(v.Blockers) == 0 || v.Blockers[0].Key == w.q.delay.key {
		return
	}
	if w.dl == nil {
		w.dl = &delayState{}
	}
	if ahead := w.dl.ahead; ahead != v.Blockers[0] {
		if ahead.Key != "" && v.Blockers[0].Rev < ahead.Rev {
			w.dropNeverHeld(ctx, ahead)
		}
		w.dl.ahead, w.dl.goneRev = v.Blockers[0], 0
	}
}

// dropNeverHeld drops the holding record of ahead, the key that was just
// ahead of the waiter and is gone while an older key of the queue lives:
// that older key lived when ahead went, so ahead was not at the head and
// never held (its lease expired, or it was deleted, while it waited; one
// that gave up dropped its record itself). Left, its record would make
// the next acquirer of an empty queue wait out the delay for a loss that
// was none. One Txn, on this path only, bounded by CleanupTimeout; if it
// fails, that needless delay is all that is lost.
func (w *waiter) dropNeverHeld(ctx context.Context, ahead Entry) {
	ctx, cancel := context.WithTimeout(ctx, CleanupTimeout)
	defer cancel()
	if _, err := w.q.Client.Txn(ctx).Then(w.q.heldDrop(ahead)).Commit(); err != nil {
		w.q.logger().Debug("could not drop the holding record of a key that never held", zap.String("key", ahead.Key), zap.Error(err))
	}
}

// delaySeen records the delete event, at rev, of blocker b.
func (w *waiter) delaySeen(b Entry, rev int64) {
	if w.dl != nil && w.dl.ahead == b {
		w.dl.goneRev, w.dl.goneAt = rev, time.Now()
	}
}

// delayOps returns the op that a confirm read adds: the marker of the key
// ahead.
func (w *waiter) delayOps() []clientv3.Op {
	if w.dl == nil || w.dl.ahead.Key == "" {
		return nil
	}
	return []clientv3.Op{clientv3.OpGet(w.q.markerKey(w.dl.ahead.Key), clientv3.WithSerializable())}
}

// delayJudge checks, when v admits the waiter, that the key ahead ended
// cleanly (marker, the last response of resp); after an unclean loss it
// records the loss and returns a verdict that waits for the delay key.
func (w *waiter) delayJudge(ctx context.Context, v Verdict, resp *clientv3.TxnResponse, read bool) (Verdict, error) {
	if !read || !v.Admitted {
		return v, nil
	}
	ahead := w.dl.ahead
	marker := resp.Responses[len(resp.Responses)-1].GetResponseRange()
	if !marks(marker, ahead) {
		clean, err := w.cleanAt(ctx, ahead)
		if err != nil {
			return v, err
		}
		if !clean {
			nv, err := w.recordLoss(ctx)
			if err != nil {
				return v, err
			}
			if !nv.Admitted {
				if w.dl.recorded {
					w.dl.ahead = Entry{}
				}
				// Else the delay key was put by another, for a loss
				// that may be older: the key ahead stays noted, and
				// its end is judged again once that delay is over.
				return nv, nil
			}
		}
	}
	w.dl.ahead = Entry{}
	return v, nil
}

// marks reports whether a marker read says that e ended cleanly.
func marks(r *pb.RangeResponse, e Entry) bool {
	return r != nil && len(r.Kvs) > 0 && string(r.Kvs[0].Value) == strconv.FormatInt(e.Rev, 10)
}

// cleanAt reads the marker of the key ahead as of its delete's revision:
// the marker's lease may have ended since a clean release. One read, on
// the path where the marker is gone only.
func (w *waiter) cleanAt(ctx context.Context, ahead Entry) (bool, error) {
	rev := w.dl.goneRev
	if rev == 0 {
		// The delete came before the watch: find its revision in etcd's
		// history, from the key's creation on (a watch from a past
		// revision, which etcd catches up within 100 ms).
		var err error
		if rev, err = w.deleteRev(ctx, ahead); err != nil || rev == 0 {
			return false, err
		}
	}
	resp, err := w.q.Client.Get(ctx, w.q.markerKey(ahead.Key), clientv3.WithRev(rev), clientv3.WithSerializable())
	if errors.Is(err, rpctypes.ErrCompacted) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return marks((*pb.RangeResponse)(resp), ahead), nil
}

// deleteRev returns the revision at which the key e was deleted, from a
// watch of its history since its creation; 0 if that history was compacted.
func (w *waiter) deleteRev(ctx context.Context, e Entry) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range w.q.Client.Watch(wctx, e.Key, clientv3.WithRev(e.Rev+1), clientv3.WithFilterPut()) {
		if wr.CompactRevision != 0 {
			return 0, nil
		}
		if err := wr.Err(); err != nil {
			return 0, err
		}
		for _, ev := range wr.Events {
			return ev.Kv.ModRevision, nil
		}
	}
	return 0, context.Cause(ctx)
}

// recordLoss puts the queue's delay key on a lease that expires the delay
// after the loss (when its event arrived, else now: a loss found by a
// read is counted from the read), unless one exists
// already, and returns the verdict to wait for it; or an admitting
// verdict when the delay has already passed. A Grant and a Txn.
func (w *waiter) recordLoss(ctx context.Context) (Verdict, error) {
	dl := w.q.delay
	since := time.Duration(0)
	if w.dl.goneRev != 0 {
		since = time.Since(w.dl.goneAt)
	}
	rest := dl.d - since
	if rest <= 0 {
		// The delay has passed: the lost key's record goes alone.
		if _, err := w.q.RecordLoss(ctx, w.dl.goneRev, 0, w.dl.ahead); err != nil {
			return Verdict{}, err
		}
		return Verdict{Admitted: true}, nil
	}
	rev, created, err := w.q.recordLoss(ctx, w.dl.goneRev, rest, []Entry{w.dl.ahead}, false)
	if err != nil {
		return Verdict{}, err
	}
	w.needDelayKey(rev)
	w.dl.recorded = w.dl.recorded || created
	w.q.logger().Info("lock-delay after an unclean loss", zap.String("ahead", w.dl.ahead.Key), zap.Int64("loss revision", w.dl.goneRev), zap.Duration("delay", rest))
	return Verdict{Blockers: []Entry{{Key: dl.key, Rev: rev, Weight: 1}}}, nil
}

// RecordLoss records an unclean loss (at revision lossRev, 0 if unknown)
// of the key gone in the queue's delay key, on a lease it grants with a
// TTL of rest (rounded up to a second), and deletes gone's holding record
// in the same Txn. A delay key that exists already is kept when its lease
// ends no sooner, and moved to the new lease otherwise, so that a delay
// recorded for an older loss never cuts this one short. It returns the
// delay key's create revision. A Grant and a Txn (and, when the key
// exists, a TimeToLive and a Txn); with rest <= 0, the record's delete
// alone; with no lock-delay, nothing.
func (q *Queue) RecordLoss(ctx context.Context, lossRev int64, rest time.Duration, gone Entry) (int64, error) {
	rev, _, err := q.recordLoss(ctx, lossRev, rest, []Entry{gone}, false)
	return rev, err
}

// recordLoss is RecordLoss; created reports that the delay key now
// covers this loss's whole delay (the waiter's delayState.recorded). With
// extend, an existing delay key is moved to the new lease whatever its
// lease. That is for a delay of the whole d from now (a
// loss found at enqueue), which ends no sooner than any recorded before
// (each counted from its loss, at most d from its grant), so the move
// never shortens a delay, and the loss found, of unknown time, gets its
// whole delay whatever was recorded before it.
func (q *Queue) recordLoss(ctx context.Context, lossRev int64, rest time.Duration, gone []Entry, extend bool) (rev int64, created bool, err error) {
	dl := q.delay
	if dl == nil {
		return 0, false, nil
	}
	drops := make([]clientv3.Op, len(gone))
	for i, e := range gone {
		drops[i] = q.heldDrop(e)
	}
	if rest <= 0 {
		_, err := q.Client.Txn(ctx).Then(drops...).Commit()
		return 0, false, err
	}
	ttl := int64((rest + time.Second - 1) / time.Second)
	g, err := q.Client.Grant(ctx, ttl)
	if err != nil {
		return 0, false, err
	}
	put := clientv3.OpPut(dl.key, strconv.FormatInt(lossRev, 10), clientv3.WithLease(g.ID))
	get := clientv3.OpGet(dl.key) // its value is a number; its lease is needed
	otherwise, getAt := append([]clientv3.Op{get}, drops...), 0
	if extend {
		otherwise, getAt = append([]clientv3.Op{put, get}, drops...), 1
	}
	var last int64
	for range 3 {
		resp, err := q.Client.Txn(ctx).If(etcdcmp.CreateRevision(dl.key, 0, false)).
			Then(append([]clientv3.Op{put}, drops...)...).Else(otherwise...).Commit()
		if err != nil {
			return 0, false, err
		}
		if resp.Succeeded {
			return resp.Header.Revision, true, nil
		}
		if len(resp.Responses) != len(otherwise) {
			return 0, false, ErrMalformed
		}
		kvs := resp.Responses[getAt].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			return 0, false, ErrMalformed
		}
		cur := kvs[0]
		last = cur.CreateRevision
		if extend {
			return cur.CreateRevision, true, nil // moved to our lease
		}
		// Recorded by another, maybe for an older loss that ends sooner.
		// Its lease's remaining TTL, in whole seconds rounded down, at
		// least ours: it covers this loss, and our lease goes unused
		// (it expires within the delay). Else the key moves to our lease
		// (its create revision, which waiters wait for, stays), guarded
		// by its mod revision. A TimeToLive and a Txn, on this path only.
		if cur.Lease != 0 {
			if tl, err := q.Client.TimeToLive(ctx, clientv3.LeaseID(cur.Lease)); err == nil && tl.TTL >= g.TTL {
				return cur.CreateRevision, true, nil
			}
		}
		mv, err := q.Client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(dl.key), "=", cur.ModRevision)).
			Then(clientv3.OpPut(dl.key, string(cur.Value), clientv3.WithLease(g.ID))).Commit()
		if err != nil {
			return 0, false, err
		}
		if mv.Succeeded {
			return cur.CreateRevision, true, nil
		}
		// Changed meanwhile (moved, or gone): judge again.
	}
	// Still changing: wait for it as it is, and judge the loss again at
	// admission (see delayJudge).
	return last, false, nil
}

// LockDelay returns the queue's lock-delay, 0 if none.
func (q *Queue) LockDelay() time.Duration {
	if q.delay == nil {
		return 0
	}
	return q.delay.d
}
