package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/backoff"
	"github.com/etcdlock/etcdlock/internal/ctxerr"
	"github.com/etcdlock/etcdlock/internal/lease"
)

// ownWatchDelay is how long a hold granted without waiting goes before it
// registers its key with the Primitive's own-key watch (see keyWatches).
const ownWatchDelay = 20 * time.Millisecond

// Hold is one granted place in a queue. Its monitor, a registration of its
// key with the Primitive's own-key watch that calls the hold back (no
// goroutine), watches for loss until the hold is lost or released; a hold
// admitted at once registers only after ownWatchDelay, so a short one
// never does. A Hold is safe for concurrent use.
type Hold struct {
	q      *Queue
	k      *lease.Keeper
	token  fencing.Token
	epoch  *lease.Epoch
	ctx    context.Context
	cancel context.CancelCauseFunc
	onEnd  func(*Hold)
	free   func() // returns the key's slot for reuse, once the key is gone
	// stopEpoch unregisters the loss on the epoch's end; finish calls it.
	stopEpoch func() bool
	// due is when the Queue's delayer starts the monitor of a hold
	// admitted at once (delayed, below).
	due time.Time
	// disp routes the deletes of the hold's key to its monitor: the
	// Primitive's own-key watch (see keyWatches).
	disp *dispatcher
	// readRev is the revision of the last read that saw the key.
	readRev int64
	// req is the release-request watch (see ReleaseRequested).
	req requests

	mu sync.Mutex
	// delayed: the monitor waits for the delayer. Release clears it before
	// the delayer starts the monitor, and then ends the hold itself: a
	// short uncontended hold never registers its key.
	delayed bool
	// sub is the monitor's registration while it is in place; whoever
	// takes it from here ends the hold (finish). While it is nil between
	// the grant and the end, the delayer or a recheck goroutine has the
	// monitor, and ends the hold itself if it ended meanwhile (attach).
	sub *sub
	// stopRecheck, while recheck reads, ends it.
	stopRecheck func()

	lost      error // the public package's *LostError, once lost
	stopped   bool  // monitor told to stop
	attempted bool  // a release request was sent
	released  bool  // a release request deleted the key
	m         holdMetrics

	// expired is the loss to the maximum hold time (MaxHoldPassed): Err's
	// cause from then on, and what Release reports instead of nil.
	expired error
}

func (w *waiter) hold(epoch *lease.Epoch, onEnd func(*Hold)) *Hold {
	w.close()
	ctx, cancel := context.WithCancelCause(context.Background())
	h := &Hold{
		q:      w.q,
		k:      w.k,
		token:  fencing.Token{Key: w.key, Revision: w.rev},
		epoch:  epoch,
		ctx:    ctx,
		cancel: cancel,
		onEnd:  onEnd,
		free:   w.free,
	}
	h.startMetrics(w)
	if ce := w.q.logger().Check(zap.DebugLevel, "acquired"); ce != nil { // no field built when off
		ce.Write(zap.Stringer("token", h.token))
	}
	// The end of the epoch closes Done by itself, whatever the monitor is
	// busy with (re-reading after a break), and ends the monitor.
	h.stopEpoch = context.AfterFunc(epoch.Context(), func() {
		h.lose(epoch.Err())
		h.endMonitor(false)
	})
	// The key was present at readRev: the monitor registers it as of then
	// with the dispatcher, which misses no delete after that while it is up
	// (and its log reaches back that far).
	h.readRev = w.readRev
	if w.q.kw != nil {
		h.disp = w.q.kw.own(w.ownPrefix)
	}
	switch {
	case w.waited || h.disp == nil:
		h.startMonitor(h.readRev)
	default:
		// Admitted by the enqueue Txn: the own key is registered only
		// after ownWatchDelay (see startMonitor). Until then the epoch
		// reports the loss of the lease, and a delete of the key by
		// another client goes unseen.
		if w.q.delays == nil {
			h.startMonitor(h.readRev)
			break
		}
		h.due = time.Now().Add(ownWatchDelay)
		h.delayed = true // before the delayer can see it
		w.q.delays.add(h)
	}
	return h
}

// startDelayed starts the monitor of a hold admitted at once, unless
// Release came first.
func (h *Hold) startDelayed() {
	h.mu.Lock()
	start := h.delayed
	h.delayed = false
	h.mu.Unlock()
	if start {
		h.startMonitor(h.readRev)
	}
}

// isDelayed reports whether h's monitor still waits for the delayer: false
// once Release ran, or the delayer started the monitor.
func (h *Hold) isDelayed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.delayed
}

// finish ends the hold once its monitor is done (or was never started).
func (h *Hold) finish() {
	h.settleLoss() // a loss's cause, for metrics: at most settleWait
	h.stopEpoch()
	h.req.wg.Wait() // the release-request watch ends with the hold
	if h.onEnd != nil {
		h.onEnd(h)
	}
}

// Token returns the hold's fencing token.
func (h *Hold) Token() fencing.Token {
	if plantedBugs && planted(leaseIDToken) {
		return fencing.Token{Key: h.token.Key, Revision: int64(h.k.ID())} // planted bug
	}
	return h.token
}

// Context returns a context cancelled when the hold is lost or released;
// its cause is a *LostError or ErrReleased.
func (h *Hold) Context() context.Context { return h.ctx }

// Done is closed when the hold is lost or released.
func (h *Hold) Done() <-chan struct{} { return h.ctx.Done() }

// Err returns nil while the hold is current, a *LostError once lost, or
// ErrReleased once released.
func (h *Hold) Err() error {
	if h.ctx.Err() == nil {
		return nil
	}
	return context.Cause(h.ctx)
}

// Deadline returns the conservative deadline of the hold's lease: the hold
// is presumed lost at that time unless the lease is renewed first.
func (h *Hold) Deadline() time.Time {
	d, _ := h.k.Deadline()
	return d
}

// Lease returns the hold's lease ID.
func (h *Hold) Lease() clientv3.LeaseID { return h.k.ID() }

// startMonitor registers the hold's key with its dispatcher (the
// Primitive's own-key watch) as of readRev, when the key was present, so
// that no delete after readRev goes unseen: the dispatcher calls the hold
// back (changed) when the key goes or the watch breaks. When the
// dispatcher cannot vouch for every delete since readRev, a goroutine
// reads the key again first (recheckLoop); until then the epoch deadline
// still guards the hold.
func (h *Hold) startMonitor(readRev int64) {
	if s := h.disp.registerCallback(readRev, h.own(), nil, h.changed); s != nil {
		h.attach(s)
		return
	}
	go h.recheckLoop()
}

func (h *Hold) own() Entry { return Entry{Key: h.token.Key, Rev: h.token.Revision} }

// attach puts the registration s in place as the hold's monitor, or, if
// the hold ended meanwhile, drops it and ends the hold.
func (h *Hold) attach(s *sub) {
	h.mu.Lock()
	if h.stopped || h.lost != nil {
		h.mu.Unlock()
		s.close()
		h.finish()
		return
	}
	h.sub = s
	h.mu.Unlock()
	h.changed(s) // what went before the registration, if anything
}

// changed is the monitor's callback, run by the dispatcher when the key
// goes or the watch breaks (on the hub's goroutine: it sends no request).
func (h *Hold) changed(s *sub) {
	st := s.state()
	switch {
	case st.ownGone:
		h.lose(keyGone(h.k))
		h.freeLostSlot()
		// Not on the hub's goroutine: finish waits for the release-request
		// watch, which may delete its key.
		h.endMonitor(true)
	case st.broken:
		h.mu.Lock()
		mine := h.sub == s
		if mine {
			h.sub = nil // the recheck goroutine has the monitor now
		}
		h.mu.Unlock()
		if mine {
			s.close()
			go h.recheckLoop()
		}
	}
}

// endMonitor removes the monitor's registration, if it is in place, and
// ends the hold; async: finish on a goroutine of its own.
func (h *Hold) endMonitor(async bool) {
	h.mu.Lock()
	s := h.sub
	h.sub = nil
	h.mu.Unlock()
	if s == nil {
		return // not in place: its owner ends the hold (see sub)
	}
	s.close()
	if async {
		go h.finish()
	} else {
		h.finish()
	}
}

// recheckLoop waits for the dispatcher's watch, reads the key, and
// registers it as of that read; it ends the hold if the key is gone or
// the hold ended meanwhile.
func (h *Hold) recheckLoop() {
	b := newBackoff()
	for {
		readRev, err := h.recheck(b)
		if err != nil {
			h.checkFailed(err)
			h.finish()
			return
		}
		if s := h.disp.registerCallback(readRev, h.own(), nil, h.changed); s != nil {
			h.attach(s)
			return
		}
	}
}

// checkFailed ends a monitor whose check of the key (recheck) failed with err: the key is gone (ErrDeleted, lease.ErrExpired), the
// epoch ended meanwhile, or the hold was released (or the Primitive
// closed), which needs nothing more.
func (h *Hold) checkFailed(err error) {
	switch {
	case errors.Is(err, ErrDeleted):
		h.lose(err)
		h.freeLostSlot() // the key is gone: its name can be reused
	case errors.Is(err, lease.ErrExpired):
		h.lose(err)
	case h.epoch.Err() != nil:
		h.lose(h.epoch.Err())
	}
}

// freeLostSlot returns the slot of a key gone without its release, unless
// the queue has lock-delay: the loss may have been unclean, and its
// holding record, which no release deleted, is what tells the next
// acquirer so (see lockdelay.go). The next enqueue under the same name
// would write over it, and a loss that no waiter saw would then hold
// nothing back. The name is left unused instead.
func (h *Hold) freeLostSlot() {
	if h.q.delay != nil {
		h.mu.Lock()
		h.free = nil
		h.mu.Unlock()
		return
	}
	h.freeSlot()
}

// freeSlot returns the key's slot once the key is known to be gone.
func (h *Hold) freeSlot() {
	h.mu.Lock()
	free := h.free
	h.free = nil
	h.mu.Unlock()
	if free != nil {
		free()
	}
}

// recheck waits for the dispatcher's watch and verifies the key with a read
// after the watch's creation. It returns the read's revision, or
// ErrDeleted/ErrExpired when the key is gone, or another error when the
// hold was stopped meanwhile (or the Primitive closed).
func (h *Hold) recheck(b *backoff.Backoff) (int64, error) {
	// Ends with the epoch, or at Release or loss (see stopRecheck): a
	// context derived from h.ctx would leave h.ctx a map of children for
	// the hold's life.
	ctx, cancel := context.WithCancel(h.epoch.Context())
	defer cancel()
	h.mu.Lock()
	if h.stopped || h.lost != nil {
		h.mu.Unlock()
		return 0, context.Canceled
	}
	h.stopRecheck = cancel
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.stopRecheck = nil
		h.mu.Unlock()
	}()
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := b.Sleep(ctx); err != nil {
				return 0, err
			}
		}
		if _, err := h.disp.waitUp(ctx, h.k.GoneCh()); err != nil {
			if errors.Is(err, errDispatcherClosed) || errors.Is(err, lease.ErrExpired) || ctx.Err() != nil {
				return 0, err
			}
			continue
		}
		// A linearizable read: its revision is at least the watch's.
		resp, err := h.q.Client.Get(ctx, h.token.Key, clientv3.WithKeysOnly())
		if err != nil || resp.Header == nil { // no header: a corrupted answer
			continue
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != h.token.Revision {
			return 0, keyGone(h.k)
		}
		return resp.Header.Revision, nil
	}
}

// lose marks the hold lost with cause, unless it was already released.
func (h *Hold) lose(cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || h.lost != nil || h.expired != nil {
		return // an expired hold was reported lost; its Release follows
	}
	h.lost = h.q.pub.lost(h.token, cause)
	h.cancel(h.lost)
	h.endLost(cause)
	if h.stopRecheck != nil {
		h.stopRecheck()
	}
	h.q.logger().Warn("hold lost", zap.Stringer("token", h.token), zap.Error(cause))
	if errors.Is(cause, lease.ErrDeadline) {
		// The lease may outlive the deadline, and with it the key, which
		// would block the queue while the holder has been told it lost:
		// have the keeper delete it (guarded by revision) once etcd answers.
		h.k.Orphan(h.token.Key, h.token.Revision)
	}
}

// Release deletes the hold's key if it is still this hold's (a Txn guarded
// by the create revision, so it can never delete a newer hold) and ends the
// hold. One round trip. It is safe to retry after an error.
//
// It returns nil when it deleted the key, or when an earlier attempt may
// have; ErrNotHeld (wrapping the loss, if known) when the hold had been lost
// or already released; or etcd's or ctx's error, after which the key may
// still exist: the lease's keeper then deletes it once etcd answers again,
// and Release may be called again meanwhile.
func (h *Hold) Release(ctx context.Context) error { return h.q.pub.Err(h.release(ctx, 0)) }

// release ends the hold: it deletes the key, or, with keep set, moves it
// to the lease keep (see Park).
func (h *Hold) release(ctx context.Context, keep clientv3.LeaseID) error {
	// Read before any state changes: a nil ctx panics here, leaving the
	// hold as it was.
	ended := context.Cause(ctx)
	h.mu.Lock()
	lost, attempted, released, expired := h.lost, h.attempted, h.released, h.expired
	if !h.stopped {
		h.stopped = true
		if h.stopRecheck != nil {
			h.stopRecheck()
		}
		if lost == nil {
			h.cancel(h.q.pub.Err(ErrReleased))
			h.endReleased()
		}
	}
	h.attempted = true
	unstarted := h.delayed
	h.delayed = false
	h.mu.Unlock()
	if unstarted {
		h.finish() // the monitor never ran
	} else {
		// A monitor in place ends here; one being rechecked ends on its
		// own (its owner, the Primitive, waits for it at Close).
		h.endMonitor(false)
	}
	if released {
		if expired != nil {
			return fmt.Errorf("%w: %w", ErrNotHeld, expired)
		}
		return fmt.Errorf("%w: already released", ErrNotHeld)
	}
	cmps := []clientv3.Cmp{h.token.Cmp()}
	if plantedBugs && planted(unlockByName) {
		cmps = nil // planted bug: delete by name, whatever its revision
	}
	var (
		resp *clientv3.TxnResponse
		err  = ended // ended already: send nothing
	)
	closed := h.q.Client.Ctx().Err() != nil
	switch {
	case err != nil:
	case closed:
		// A closed client fails its requests only after retrying them
		// until ctx ends. Send nothing: the lease is no longer renewed,
		// and the key goes with it within its TTL.
		err = ErrClientClosed
	default:
		resp, err = h.q.Client.Txn(ctx).If(cmps...).Then(h.releaseOps(keep)...).Commit()
	}
	if err != nil {
		// The hold has ended for its owner, but its key may live on with
		// the lease, which is still renewed, and block the queue until the
		// owner retries or closes: have the keeper delete it (guarded by
		// the revision, so a retry that lands first loses nothing), in the
		// background, at once and after its renewals until it succeeds.
		// The slot is not reused meanwhile. The keeper's delete is this
		// release's: it carries the release's other ops, so with
		// lock-delay the end is marked clean (the holder has unlocked: no
		// write of its is in flight) and its holding record goes with the
		// key. A hold lost before has no key to hand over: lost to its
		// deadline, lose did so; deleted or expired, the key is gone.
		if lost == nil && !closed { // the keeper cannot send either
			h.k.OrphanWith(h.token.Key, h.token.Revision, h.releaseWith(), nil)
		}
		if cause := ctxerr.Ended(ctx); cause != nil {
			return cause
		}
		// With the client closed the lease is no longer renewed, and the
		// key goes with it within its TTL.
		return clientClosed(h.q, err)
	}
	switch {
	case keep == 0 && resp.Succeeded:
		h.freeSlot() // deleted now
	case !resp.Succeeded:
		h.freeLostSlot() // gone before
	} // else parked: the key lives on, and its slot is never reused
	if resp.Succeeded {
		h.mu.Lock()
		h.released = true
		h.mu.Unlock()
		if lost != nil {
			return fmt.Errorf("%w: %w", ErrNotHeld, lost)
		}
		if expired != nil {
			// Deleted by whichever release came first after the maximum
			// hold passed: the hold had ended as lost, not unlocked.
			return fmt.Errorf("%w: %w", ErrNotHeld, expired)
		}
		if ce := h.q.logger().Check(zap.DebugLevel, "released"); ce != nil {
			ce.Write(zap.Stringer("token", h.token))
		}
		return nil
	}
	switch {
	case lost != nil:
		return fmt.Errorf("%w: %w", ErrNotHeld, lost)
	case expired != nil:
		// The maximum hold's release, or an Unlock racing it, deleted
		// the key: either way the hold ended as lost.
		h.mu.Lock()
		h.released = true
		h.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrNotHeld, expired)
	case attempted:
		// An earlier attempt's delete landed, or the key expired since.
		h.mu.Lock()
		h.released = true
		h.mu.Unlock()
		return nil
	default:
		cause := ErrDeleted
		if h.k.Gone() != nil {
			cause = lease.ErrExpired
		}
		return fmt.Errorf("%w: %w", ErrNotHeld, h.q.pub.lost(h.token, cause))
	}
}
