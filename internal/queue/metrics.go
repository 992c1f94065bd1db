package queue

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/etcdlock/etcdlock/internal/config"
	"github.com/etcdlock/etcdlock/internal/lease"
	"github.com/etcdlock/etcdlock/metrics"
)

// settleWait bounds how long a hold's monitor waits, after the loss of its
// key, for the renewal its loss asked for (see keyGone) to tell a revoked
// lease from a deleted key, for metrics only: the hold is reported lost
// before that.
const settleWait = 2 * time.Second

// meter reports a Primitive's events to the Observer of its options. A nil
// *meter (no WithMetrics) reports nothing and costs a nil check: no clock
// read, no goroutine, no request. It is safe for concurrent use.
type meter struct {
	o          metrics.Observer
	kind, name string

	mu      sync.Mutex
	k       *lease.Keeper // the lease whose renewals are reported
	unwatch func()
	stopped bool
}

func newMeter(cfg *config.Config, kind, name string) *meter {
	if cfg.Metrics == nil {
		return nil
	}
	return &meter{o: cfg.Metrics, kind: kind, name: name}
}

// watchLease reports the renewals of k, the lease of the Primitive's next
// hold, from now on, in place of the last lease's.
func (m *meter) watchLease(k *lease.Keeper) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.k == k || m.stopped {
		return
	}
	if m.unwatch != nil {
		m.unwatch()
	}
	m.k = k
	m.unwatch = k.OnRenew(func(left time.Duration) {
		m.o.LeaseRenewed(metrics.RenewEvent{Kind: m.kind, Name: m.name, Left: left})
	})
}

// stop ends the reports of renewals, at Close.
func (m *meter) stop() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	if m.unwatch != nil {
		m.unwatch()
		m.unwatch = nil
	}
}

// acquired reports an acquire that began at start and returned h and err
// (this package's error, before Public.Err).
func (m *meter) acquired(ctx context.Context, start time.Time, h *Hold, err error) {
	ev := metrics.AcquireEvent{Kind: m.kind, Name: m.name, Wait: time.Since(start), Result: acquireResult(ctx, err)}
	if h != nil {
		ev.Waited = h.m.waited
	}
	m.o.Acquired(ev)
}

func acquireResult(ctx context.Context, err error) metrics.Result {
	switch {
	case err == nil:
		return metrics.Granted
	case errors.Is(err, ErrLocked):
		return metrics.Locked
	case errors.Is(err, ErrClosed), errors.Is(err, ErrClientClosed):
		return metrics.Closed
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return metrics.Deadline
	case ctx.Err() != nil:
		return metrics.Cancelled
	case errors.Is(err, ErrSessionExpired):
		return metrics.SessionExpired
	case errors.Is(err, ErrDeleted):
		return metrics.Deleted
	}
	return metrics.Error
}

// lossCause is the metrics cause of a loss whose cause (this package's or
// lease's error) is err.
func lossCause(err error) metrics.Cause {
	switch {
	case errors.Is(err, lease.ErrDeadline):
		return metrics.LostDeadline
	case errors.Is(err, lease.ErrExpired):
		return metrics.LostLeaseGone
	case errors.Is(err, ErrDeleted):
		return metrics.LostKeyDeleted
	}
	return metrics.LostOther
}

// holdMetrics is a Hold's state for metrics, guarded by the Hold's mu but
// for granted and waited, which are set before the Hold is shared.
type holdMetrics struct {
	granted time.Time // zero: nothing to report (no meter, or silenced)
	waited  bool      // granted after waiting behind another hold
	maxHold bool      // released by the maximum hold timer (MaxHoldPassed)
	// settle: lost with its key deleted while the lease seemed alive; the
	// monitor reports the loss once the renewal that keyGone asked for
	// says whether the lease was revoked (settleCh: the keeper's next
	// change of state).
	settle   bool
	settleCh <-chan struct{}
	lostAt   time.Time // when settle was set: the end of the hold time
}

// startMetrics sets h's grant time, from which its hold time is measured.
func (h *Hold) startMetrics(w *waiter) {
	if w.q.met != nil {
		h.m.granted = time.Now()
		h.m.waited = w.waited
	}
}

// endLost reports h's loss with cause; h.mu is held. A deleted key is
// reported by settleLoss, once the lease is known to be alive or gone.
func (h *Hold) endLost(cause error) {
	if h.q.met == nil || h.m.granted.IsZero() {
		return
	}
	if errors.Is(cause, ErrDeleted) {
		if h.k.Gone() == nil {
			h.m.settle, h.m.settleCh, h.m.lostAt = true, h.k.Changed(), time.Now()
			return
		}
		// The keeper found the lease gone since the key's delete was
		// judged: the lease took the key.
		h.report(metrics.LostLeaseGone, time.Now())
		return
	}
	h.report(lossCause(cause), time.Now())
}

// endReleased reports h's release (or its end by the maximum hold); h.mu
// is held.
func (h *Hold) endReleased() {
	if h.q.met == nil || h.m.granted.IsZero() {
		return
	}
	if h.m.maxHold {
		h.report(metrics.LostMaxHold, time.Now())
		return
	}
	h.report(metrics.Released, time.Now())
}

// report reports h's end at end with cause c, once; h.mu is held.
func (h *Hold) report(c metrics.Cause, end time.Time) {
	h.q.met.o.Ended(metrics.EndEvent{Kind: h.q.met.kind, Name: h.q.met.name, Cause: c, Held: end.Sub(h.m.granted)})
	h.m.granted = time.Time{} // once
}

// settleLoss reports a loss that endLost left pending: the lease's, if the
// keeper finds it gone within settleWait (or before Close), else the key's
// (once a renewal sent after the loss was acknowledged, or at the end of
// settleWait).
// It runs in finish, never on the hub's goroutine; the Primitive's Close
// waits for it.
func (h *Hold) settleLoss() {
	if h.q.met == nil {
		return
	}
	h.mu.Lock()
	settle, ch := h.m.settle, h.m.settleCh
	h.m.settle = false
	h.mu.Unlock()
	if !settle {
		return
	}
	var closing <-chan struct{}
	if h.q.kw != nil {
		closing = h.q.kw.ctx.Done()
	}
	t := time.NewTimer(settleWait)
	defer t.Stop()
	h.mu.Lock()
	lostAt := h.m.lostAt
	h.mu.Unlock()
wait:
	for {
		select {
		case <-h.k.GoneCh():
		case <-ch:
			// A renewal sent before the loss (in flight at a revoke) says
			// nothing of the lease now: ask again, and wait for one sent
			// after.
			if h.k.Gone() == nil && !h.k.AckedSince(lostAt) {
				ch = h.k.Changed()
				h.k.Check()
				continue
			}
		case <-closing:
		case <-t.C:
		}
		break wait
	}
	cause := metrics.LostKeyDeleted
	if h.k.Gone() != nil {
		cause = metrics.LostLeaseGone
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.m.granted.IsZero() {
		h.report(cause, h.m.lostAt)
	}
}

// MaxHoldPassed ends h as lost to its maximum hold time (package lock's
// WithMaxHold), lost being that loss: at once, and in the same step as the
// check that h had not ended, Err returns lost, and every later (or
// concurrent) Release that would have returned nil returns ErrNotHeld
// wrapping lost. The key is still to be deleted by a Release; the end is
// reported to metrics as that loss. It returns false, changing nothing, if
// h had already been released or lost.
func (h *Hold) MaxHoldPassed(lost error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || h.lost != nil || h.expired != nil {
		return false
	}
	h.m.maxHold = true
	h.expired = lost
	h.cancel(lost)
	return true
}

// silence keeps h's end unreported: a grant that Acquire undid (Close ran
// meanwhile) and reports as ErrClosed.
func (h *Hold) silence() {
	h.mu.Lock()
	h.m.granted = time.Time{}
	h.mu.Unlock()
}
