// Package queue is the one waiting mechanism behind every etcdlock
// primitive: mutex, read-write lock, semaphore and election.
//
// A waiter puts a key with its lease under the queue's prefix; the key's
// create revision is its place in line and its fencing token. A Rule decides,
// from reads of the older keys, whether the waiter is admitted and, if not,
// which older keys must go first.
//
// A waiter learns of its turn from watches on only the keys that decide
// it: a release wakes only the waiters it may admit. Each Rule names, as
// Blockers, the nearest older keys that keep the waiter out while all of
// them are present:
//
//   - mutex, election and writer: the one key just ahead;
//   - reader: the nearest writer ahead (the readers behind one writer all
//     watch it, and all start at its delete);
//   - semaphore: the nearest keys ahead whose permits, with the waiter's,
//     exceed the limit (one key when the waiter wants them all; at most
//     the limit's worth of keys, and the queue's prefix when that is more
//     than maxBlockerWatches keys).
//
// The waiter watches those keys, and its own key through the Primitive's
// own-key watch (see keyWatches); when one of them goes it confirms with
// one read, which names the next blockers, until the rule admits it. Older
// keys only ever go, so it cannot be admitted while all its blockers are
// present: no turn is missed and nobody barges (the rule judges every
// older key). A lone blocker's watch is kept for the next wait, which
// stops it if it does not need it, and all watches share one gRPC stream.
//
// # Holds at scale
//
// A process may hold many locks at once. Each Primitive's own-key watch
// (one per lease) is carried by its client's hub: one gRPC watch stream per
// client for every Primitive on it, served by two goroutines, which routes
// each delete to the Primitive's dispatcher by watch ID. A hold's monitor is
// a registration of its key with that dispatcher, called back on the hub's
// goroutine when the key goes (the hold is lost: Done closes) or the watch
// breaks (a goroutine reads the key, then registers again): no goroutine
// and no clientv3 watch per hold. The end of the lease's epoch closes Done
// by itself. A broken stream is replaced and each watch created again from
// the revision after the last it delivered, so registrations stay valid;
// only a compaction of that revision voids them. Guarded release is
// unchanged: one Txn comparing the key's create revision.
//
// What a hold notices before its monitor is in place: the loss of its
// lease, at once (the epoch). A delete of its key by another client is
// noticed once the monitor is in place, which for a hold that waited is
// at the grant, and for one admitted by its enqueue ownWatchDelay (20 ms)
// later, plus, when the Primitive's own-key watch is not open, its
// creation and one read of the key. The registration is as of the read
// that granted the hold, so a delete made before then is noticed then
// (from the dispatcher's log of deletes, or by that read); a hold released
// before then never registers.
//
// # Round trips
//
//   - Acquire: one Txn, the enqueue. It puts the waiter's key and runs the
//     rule's reads, which judge it; a try puts it only when the rule's
//     comparisons (Rule.TryIf) say the lock is free. When the last waiting
//     acquire through the queue (a try neither uses nor sets the hint; see
//     Queue.OwnHint) was admitted at once, the next sends the lean enqueue
//     first: the comparisons and the put, no reads; if they fail (a busy
//     lock, or a stray key) it writes nothing and the full enqueue follows,
//     one more round trip. With per-key watches it does not when the kept
//     watch on the key ahead saw that key deleted since the last wait:
//     another contender is looping on the lock.
//   - Release: one Txn (delete own key if its create revision is still ours).
//   - A waiter: after the enqueue Txn, it registers its key with the
//     own-key watch, up since before the enqueue, and takes the kept watch
//     on its blocker, open since before the enqueue too: no request, and
//     nothing missed. A blocker of another name gets a watch opened at the
//     server's current revision, which waits for the "created" reply (a
//     stream message, no raft round); then one read-only Txn, skipped when
//     every watch was created at the enqueue revision. The own-key watch,
//     when it was not up (the first wait, or after it broke), costs that
//     read too. Each wake-up costs one read-only Txn.
//
// Watches are never started at a revision the server has already passed:
// such a watcher is "unsynced" and etcd only catches those up every 100 ms,
// which is what stalls etcd's concurrency.Mutex at every contended handoff.
// Instead a watch starts at the current revision and a read after it is
// created tells whether the awaited key was already gone. (An own-key watch
// created again after its stream broke resumes where it left off, as
// clientv3's watches do: that costs a catch-up on etcd's tick, once per
// break, where reading every registered key again would cost a read per
// hold.)
package queue

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/etcdcmp"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/lease"
)

// CleanupTimeout bounds the removal of a waiter's key after a failed or
// cancelled wait, and of a hold's key at release by Close.
const CleanupTimeout = 5 * time.Second

// Entry is one key of a queue.
type Entry struct {
	Key    string
	Rev    int64 // create revision
	Weight int64 // for a semaphore: permits; otherwise 1
}

// Verdict is a Rule's decision for one waiter.
type Verdict struct {
	Admitted bool
	// Blockers are older keys that keep the waiter out while the summed
	// Weight of those still present is above Threshold: the waiter watches
	// them and reads again (the rule judges anew) once it is not. A rule
	// names the fewest, nearest keys it can: every release of a blocker
	// is sent to the waiter.
	Blockers  []Entry
	Threshold int64
	// Err, if set, fails the acquire (e.g. a semaphore limit mismatch).
	Err error
}

// Rule is an admission rule.
type Rule interface {
	// Reads returns the read ops that feed Judge. With maxRev 0 they run in
	// the enqueue Txn, where the new key is the newest in the queue; else
	// they run in a confirm read and must ignore keys created after maxRev.
	// Confirm reads should be serializable (clientv3.WithSerializable): the
	// waiter checks the response's revision (see waiter.confirm).
	Reads(prefix string, maxRev int64) []clientv3.Op
	// Judge decides for the waiter self from the Reads' responses; it must
	// ignore self and anything newer.
	Judge(self Entry, resps []*pb.RangeResponse) Verdict
	// TryIf returns comparisons that hold when a new waiter would be
	// admitted at once, so a try-acquire is one Txn that puts nothing when
	// they fail, and an acquire on an idle queue needs no reads; nil if the
	// rule cannot say.
	TryIf(prefix string) []clientv3.Cmp
}

// Queue is one named queue. It is safe for concurrent use.
type Queue struct {
	Client *clientv3.Client
	Prefix string
	Rule   Rule
	Logger *zap.Logger
	// Slots, if set, makes waiter keys reuse names (see Slots); else each
	// waiter gets a random key.
	Slots *Slots
	// KeyName, if set, names every waiter key of a lease: one key per lease
	// (etcd's concurrency.Mutex layout, see EtcdKey). A key found under that
	// name is never deleted as a stray: the enqueue fails with ErrKeyTaken.
	KeyName func(prefix string, lease clientv3.LeaseID) string
	// Namespace is the namespace of Prefix, under which the release
	// requests of the queue's holds are kept (see RequestKey).
	Namespace string

	// idle, if set, is the hint that the last acquire through this queue
	// found it idle, which makes the next one try the lean enqueue first
	// (see Acquire); copies of a Primitive's Queue share it unless given
	// their own (OwnHint). Nil: never.
	idle *atomic.Bool
	// delays, if set, starts the own-key watches of holds admitted at once
	// (see Hold); every Primitive shares holdDelays. Nil: at once.
	delays *delayer

	// pub reports errors as the public package's (see Public); copies of a
	// Primitive's Queue share it. Nil: as this package's.
	pub *Public

	// delay, if set, is the queue's lock-delay (see SetLockDelay).
	delay *lockDelay

	// kw, if set, is the Primitive's kept watches: its own keys' and the
	// last blockers' (see keyWatches); copies of a Primitive's Queue share
	// it.
	kw *keyWatches

	// met, if set, reports to the Primitive's metrics observer (see
	// meter); copies of a Primitive's Queue share it. Nil: no metrics.
	met *meter
}

// Mode says whether an acquire waits for its turn.
type Mode int

const (
	// Wait blocks until the waiter is admitted.
	Wait Mode = iota
	// Try returns ErrLocked, leaving no key, unless admitted at once.
	Try
)

// Request is one acquire.
type Request struct {
	Value  string // the key's value; the Primitive's Value if empty
	Weight int64  // the waiter's weight in its rule (a semaphore's permits); 0 means 1
	Mode   Mode
	// KeySuffix, if set, ends the waiter's key name: what a rule reading
	// keys only (no values) must learn of the request (a semaphore's
	// permits and limit).
	KeySuffix string
}

// Acquire enqueues a waiter on k's lease and blocks until the rule admits
// it, ctx ends (the key is removed, ctx's cause returned), the waiter's key
// or lease is lost (ErrSessionExpired or ErrDeleted), or the rule fails. A
// Try returns ErrLocked instead of waiting. onEnd, if not nil, runs when
// the returned hold ends.
func (q *Queue) Acquire(ctx context.Context, k *lease.Keeper, req Request, onEnd func(*Hold)) (*Hold, error) {
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	epoch, err := k.Current(ctx)
	if err != nil {
		return nil, goneEarly(err)
	}
	if q.kw != nil {
		q.kw.touch()
	}
	w := &waiter{q: q, k: k, weight: max(req.Weight, 1), suffix: req.KeySuffix}
	v, err := w.enqueue(ctx, req)
	if err != nil {
		return nil, err
	}
	return w.admit(ctx, epoch, v, req.Mode, onEnd)
}

// enqueue puts the waiter's key in one Txn that also judges it (see the
// package doc's round trips), and returns the verdict. A Try that the
// rule's comparisons refuse puts nothing and returns ErrLocked. A key of
// another writer found under the waiter's name is handed to the keeper to
// delete, and the waiter takes another name.
func (w *waiter) enqueue(ctx context.Context, req Request) (Verdict, error) {
	q, k := w.q, w.k
	tryIf := q.Rule.TryIf(q.Prefix)
	// lean: try the lean enqueue first (see enqueueTxn), on the hint that
	// the last acquire through this queue found it idle, unless another
	// contender was seen using the lock since this queue's last wait: in a
	// loop of two contenders every other acquire finds the lock idle, just
	// after the other's release, and the next one finds it busy again.
	lean := tryIf != nil && req.Mode == Wait && q.idle != nil && q.idle.Load()
	if lean && q.kw != nil && q.kw.contended() {
		lean = false
		q.idle.Store(false)
	}
	for strays := 0; ; {
		if w.key == "" {
			w.takeKey()
		}
		// A waiting acquire's full enqueue compares its own key only: the
		// rule's comparisons would say at once what its reads say anyway,
		// and etcd reads every key of a range it compares (with its
		// value), which on a busy lock is the whole queue, once more per
		// enqueue (etcdserver/txn/txn.go: applyCompare).
		cmps := tryIf
		if req.Mode == Wait && !lean {
			cmps = nil
		}
		resp, err := w.enqueueTxn(ctx, req, cmps, lean)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// etcd applied the Txn and refused it whole: nothing was put.
			// The keeper has not noticed yet; tell it, so that the lease's
			// holds end and its Source replaces it.
			k.NotFound()
			return Verdict{}, errGoneEarly
		}
		if err != nil {
			// The put may have landed, or may still land: the keeper
			// removes it, at once and for a while after (the key's slot
			// is not reused).
			w.removeByKey()
			return Verdict{}, err
		}
		if err := wellFormed(resp, w.enqueueAnswer(resp.Succeeded, req.Mode, cmps != nil, lean)); err != nil {
			w.removeByKey() // as for any answer of unknown outcome
			return Verdict{}, err
		}
		if lean && !resp.Succeeded {
			// Busy, or a stray key under our name: the lean enqueue wrote
			// nothing. Enqueue in full under the same name, which tells a
			// stray (below).
			lean = false
			q.idle.Store(false)
			continue
		}
		w.rev = resp.Header.Revision
		v, strayRev, err := w.judgeEnqueue(resp, req.Mode, cmps != nil)
		if strayRev == 0 {
			w.readRev, w.needRev = w.rev, w.rev
			if err == nil && w.q.delay != nil {
				// Put: the last response is the oldest holding record.
				v = w.staleHeld(ctx, v, resp.Responses[len(resp.Responses)-1].GetResponseRange())
			}
			return v, err
		}
		if q.KeyName != nil {
			// The name is the lease's: the key is another user's of the
			// same lease (or a failed enqueue's, deleted with the lease).
			return Verdict{}, fmt.Errorf("%w: %s already exists (one key per lease and name)", ErrKeyTaken, w.key)
		}
		// A key already has our name. Our own failed enqueues never reuse a
		// name, so someone else wrote it: have it deleted (guarded by its
		// revision) and take another key.
		k.Orphan(w.key, strayRev)
		if strays++; strays > 3 {
			return Verdict{}, fmt.Errorf("%w: %s already exists, as did the names before it", ErrKeyTaken, w.key)
		}
		w.key = ""
	}
}

// takeKey gives the waiter a key name: a slot of the queue's pool, or a
// random name.
func (w *waiter) takeKey() {
	q := w.q
	switch {
	case plantedBugs && planted(unlockByName):
		w.key, w.free = fmt.Sprintf("%s%016x", q.Prefix, int64(w.k.ID())), nil // planted bug: etcd's key naming
	case q.KeyName != nil:
		w.key, w.free = q.KeyName(q.Prefix, w.k.ID()), nil
	case q.Slots != nil:
		w.key, w.free = q.Slots.take(q.Prefix, w.k.ID())
	default:
		w.key, w.free = keys.Waiter(q.Prefix, w.k.ID()), nil
	}
	w.key += w.suffix
	if q.kw != nil {
		w.ownPrefix = q.ownPrefix(w.key, w.k.ID())
	}
}

// enqueueTxn sends the enqueue Txn: with the rule's comparisons (tryIf,
// given to a try and a lean enqueue only), the put when they hold; else,
// the key being new, the put and the rule's reads.
func (w *waiter) enqueueTxn(ctx context.Context, req Request, tryIf []clientv3.Cmp, lean bool) (*clientv3.TxnResponse, error) {
	q, id := w.q, w.k.ID()
	put := clientv3.OpPut(w.key, req.Value, clientv3.WithLease(id))
	switch {
	case tryIf != nil && (req.Mode == Try || lean):
		// When the rule's comparisons say a newcomer is admitted at once
		// (an idle lock), the Txn is a compare and a put: no range read
		// and no sort (with lock-delay, the holding record's put and the
		// read of the oldest record too, a range of about one key: see
		// lockdelay.go). Otherwise a try fails, putting nothing, and reads
		// its own key, which tells a stray key (below) from a busy lock.
		// The lean enqueue is the same Txn with an empty Else: on a busy
		// lock it writes nothing, and the full enqueue follows. It
		// spares the server the full enqueue's reads (a sorted range,
		// decoded and logged with every request) on an
		// idle lock, where most acquires of an uncontended lock land; a
		// lock found busy costs one more round trip, while its holder
		// holds anyway, and turns the hint off until an acquire finds
		// the lock idle again.
		txn := q.Client.Txn(ctx).If(EnqueueIf(tryIf, w.key)...).Then(w.enqueueThen(put, nil)...)
		if !lean {
			txn = txn.Else(clientv3.OpGet(w.key, clientv3.WithKeysOnly()))
		}
		return txn.Commit()
	default:
		// A wait's full enqueue (see waiter.enqueue), and any enqueue
		// under a rule without comparisons: the put and the rule's reads
		// when the key is new; else the stray key's revision.
		return q.Client.Txn(ctx).If(etcdcmp.CreateRevision(w.key, 0, false)).
			Then(w.enqueueThen(put, q.Rule.Reads(q.Prefix, 0))...).
			Else(clientv3.OpGet(w.key, clientv3.WithKeysOnly())).Commit()
	}
}

// enqueueThen returns the ops of an enqueue branch that puts the key: the
// put, with lock-delay the put of the key's holding record, the reads,
// and with lock-delay the read of the queue's oldest holding record (see
// lockdelay.go): two more ops in the same Txn, no round trip.
func (w *waiter) enqueueThen(put clientv3.Op, reads []clientv3.Op) []clientv3.Op {
	ops := make([]clientv3.Op, 0, 1+len(reads)+w.q.heldN())
	ops = append(ops, put)
	ops = append(ops, w.q.heldPut(w.key)...)
	ops = append(ops, reads...)
	return append(ops, w.q.heldRead()...)
}

// answer is the shape of a Txn's answer that the code reading it indexes:
// n responses, those from index ranges on range responses.
type answer struct{ n, ranges int }

// wellFormed returns ErrMalformed unless resp has a header and the shape a.
func wellFormed(resp *clientv3.TxnResponse, a answer) error {
	return CheckTxn(resp, a.n, a.ranges)
}

// CheckTxn returns ErrMalformed unless resp has a header and n responses,
// those from index ranges on range responses: the shape of the answer to
// a Txn whose branch taken has n operations. etcd always answers so; the
// check keeps a corrupted answer an error rather than a panic or a misread.
func CheckTxn(resp *clientv3.TxnResponse, n, ranges int) error {
	if resp.Header == nil || len(resp.Responses) != n {
		return ErrMalformed
	}
	for _, r := range resp.Responses[ranges:] {
		if r.GetResponseRange() == nil {
			return ErrMalformed
		}
	}
	return nil
}

// enqueueAnswer is the shape of the enqueue Txn's answer (see enqueueTxn):
// the put alone when the comparisons held for a Try or a lean enqueue;
// nothing for a lean enqueue they refused; the waiter's key read for a Try
// they refused or a full enqueue whose key existed; otherwise the put and
// the rule's reads.
func (w *waiter) enqueueAnswer(succeeded bool, mode Mode, cmp, lean bool) answer {
	h := w.q.heldN() // with lock-delay, the put (at 1) and the read (last) of holding records
	switch {
	case cmp && succeeded:
		return answer{1 + h, 1 + h/2}
	case cmp && lean:
		return answer{0, 0}
	case cmp && mode == Try, !cmp && !succeeded:
		return answer{1, 0}
	}
	return answer{1 + len(w.q.Rule.Reads(w.q.Prefix, 0)) + h, 1 + h/2}
}

// judgeEnqueue reads the enqueue Txn's answer (cmp: it had the rule's
// comparisons): the verdict, or the create revision of a stray key found
// under the waiter's name, or ErrLocked for a Try the comparisons refused.
func (w *waiter) judgeEnqueue(resp *clientv3.TxnResponse, mode Mode, cmp bool) (Verdict, int64, error) {
	rs := resp.Responses
	// The rule's reads, in a branch that put the key: after the put (and
	// the holding record's), before the holding records' read.
	reads := func() []*pb.ResponseOp { return rs[1+w.q.heldN()/2 : len(rs)-w.q.heldN()/2] }
	switch {
	case resp.Succeeded && cmp:
		return Verdict{Admitted: true}, 0, nil
	case resp.Succeeded:
		return w.q.Rule.Judge(w.self(), ranges(reads())), 0, nil
	}
	if stray := rs[0].GetResponseRange().Kvs; len(stray) > 0 {
		return Verdict{}, stray[0].CreateRevision, nil
	}
	if w.free != nil {
		w.free()
	}
	return Verdict{}, 0, ErrLocked // a try: the rule's comparisons failed
}

// admit makes a hold of the enqueued waiter once v, or the wait after it,
// admits it; on failure it removes the waiter's key.
func (w *waiter) admit(ctx context.Context, epoch *lease.Epoch, v Verdict, mode Mode, onEnd func(*Hold)) (*Hold, error) {
	if w.q.idle != nil && mode == Wait {
		w.q.idle.Store(v.Admitted)
	}
	err := v.Err
	switch {
	case err != nil:
	case !v.Admitted && mode == Try:
		err = ErrLocked
	case !v.Admitted:
		w.waited = true
		err = w.wait(ctx, v)
	}
	// The lease must still be alive in the epoch the hold starts in.
	if err == nil && epoch.Err() != nil {
		epoch, err = w.k.Current(ctx)
	}
	if err != nil {
		w.close()
		w.remove(ctx)
		return nil, err
	}
	return w.hold(epoch, onEnd), nil
}

// EnqueueIf returns the comparisons of an enqueue Txn of key whose Then
// branch admits the waiter at once, given the rule's TryIf: those, and that
// key does not exist yet, unless they already say so (an empty range holding
// key). Each comparison costs the server a range read, and the client a
// copy of it in clientv3's Txn.If.
func EnqueueIf(tryIf []clientv3.Cmp, key string) []clientv3.Cmp {
	for i := range tryIf {
		if saysAbsent(tryIf[i].GetCompare(), key) {
			return tryIf
		}
	}
	return append([]clientv3.Cmp{etcdcmp.CreateRevision(key, 0, false)}, tryIf...)
}

// saysAbsent reports whether c, holding, says that key does not exist: it
// requires create revision 0 of every key in a range that holds key (etcd
// compares an empty range as one key with create revision 0).
func saysAbsent(c *pb.Compare, key string) bool {
	if c == nil || c.Target != pb.Compare_CREATE || c.Result != pb.Compare_EQUAL || c.GetCreateRevision() != 0 {
		return false
	}
	from, end := string(c.Key), string(c.RangeEnd)
	switch end {
	case "":
		return key == from
	case "\x00": // every key from Key on
		return key >= from
	default:
		return key >= from && key < end
	}
}

// OwnHint gives q a lean-enqueue hint of its own (see Acquire), apart from
// the Queue it was copied from: for a queue whose acquires are admitted on
// other terms (a read-write lock's readers and writers).
func (q *Queue) OwnHint() { q.idle = new(atomic.Bool) }

func ranges(rs []*pb.ResponseOp) []*pb.RangeResponse {
	out := make([]*pb.RangeResponse, len(rs))
	for i, r := range rs {
		out[i] = r.GetResponseRange()
	}
	return out
}

// Older returns the entries of kvs created before self, newest first when kvs
// is sorted newest first. weight, if not nil, gives each entry's weight.
func Older(self Entry, kvs []*mvccpb.KeyValue, weight func(*mvccpb.KeyValue) int64) []Entry {
	var out []Entry
	for _, kv := range kvs {
		if kv.CreateRevision >= self.Rev {
			continue
		}
		e := Entry{Key: string(kv.Key), Rev: kv.CreateRevision, Weight: 1}
		if weight != nil {
			e.Weight = weight(kv)
		}
		out = append(out, e)
	}
	return out
}

// Token returns the fencing token of an entry.
func (e Entry) Token() fencing.Token { return fencing.Token{Key: e.Key, Revision: e.Rev} }
