package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// Hold is one grant of a lock, semaphore permit or read lock. It is safe for
// concurrent use.
//
// A hold ends when it is unlocked or lost. Loss is reported at the first
// sign: the key deleted (seen by watch), the lease gone, or the lease's
// conservative deadline passed without a renewal. Stop acting on the
// protected resource when Done closes, and fence the resource with Token
// so that a holder paused past its deadline is refused anyway.
type Hold struct {
	h       *queue.Hold
	p       *queue.Primitive
	granted time.Time // by this process's monotonic clock
	// ctx is h's context, or, with a maximum hold, a child of it that the
	// timer ends (see WithMaxHold).
	ctx context.Context
	// ended, if set, runs once the hold's key is gone or its release was
	// attempted (see NewEtcdMutex).
	ended func()
}

// newHold wraps h, a grant of p, and arms its maximum hold, if any.
func newHold(p *queue.Primitive, h *queue.Hold) *Hold {
	hold := &Hold{h: h, p: p, granted: time.Now(), ctx: h.Context()}
	recordDeleted(p, h) // with lock-delay
	if max := p.Cfg.MaxHold; max > 0 {
		ctx, cancel := context.WithCancelCause(h.Context())
		hold.ctx = ctx
		t := time.AfterFunc(max, func() { hold.expire(cancel) })
		context.AfterFunc(ctx, func() { t.Stop() })
	}
	return hold
}

// expire ends the hold at its maximum: it is reported lost (ErrMaxHold)
// and its key deleted, on a context bounded by queue.CleanupTimeout. Close
// waits for it; after Close began there is nothing left to release.
func (h *Hold) expire(cancel context.CancelCauseFunc) {
	done, ok := h.p.Track()
	if !ok {
		return
	}
	defer done()
	lost := &LostError{Token: h.Token(), Cause: ErrMaxHold, At: time.Now()}
	// The hold is marked lost before its key is deleted, in one step with
	// the check that it had not ended: an Unlock racing this one returns
	// ErrNotHeld wrapping the loss, whichever of the two deletes the key.
	if !h.h.MaxHoldPassed(lost) {
		return // unlocked or lost meanwhile
	}
	cancel(lost) // already ended through h.h's context; stops the timer
	h.p.Cfg.Logger.Warn("maximum hold time passed: releasing", zap.Stringer("token", h.Token()), zap.Duration("max", h.p.Cfg.MaxHold))
	ctx, ccancel := context.WithTimeout(context.Background(), queue.CleanupTimeout)
	defer ccancel()
	_ = h.h.Release(ctx) // on failure the lease's keeper deletes the key
	h.end()
}

// end runs the hold's ended function, if any.
func (h *Hold) end() {
	if h.ended != nil {
		h.ended()
	}
}

// Token returns the hold's fencing token: its key and the key's create
// revision. A Mutex's (or an RWMutex writer's) token is greater than the
// token of every earlier hold of the same lock; for read holds and
// semaphore permits, see RWMutex and Semaphore for what a token orders.
func (h *Hold) Token() fencing.Token { return h.h.Token() }

// Done returns a channel closed when the hold is lost or unlocked.
func (h *Hold) Done() <-chan struct{} { return h.ctx.Done() }

// Context returns a context cancelled when the hold is lost or unlocked.
// context.Cause gives a *LostError (matching ErrLost) or ErrReleased.
func (h *Hold) Context() context.Context { return h.ctx }

// Err returns nil while the hold is current, a *LostError (matching ErrLost
// and its cause) once lost, or ErrReleased once unlocked.
func (h *Hold) Err() error {
	if h.ctx.Err() == nil {
		return nil
	}
	return context.Cause(h.ctx)
}

// Deadline returns when the hold will be presumed lost unless its lease is
// renewed first (renewals move it every TTL/3). After a loss it no longer
// describes this hold.
func (h *Hold) Deadline() time.Time { return h.h.Deadline() }

// Lease returns the ID of the hold's lease.
func (h *Hold) Lease() clientv3.LeaseID { return h.h.Lease() }

// Unlock deletes the hold's key in one Txn, only while its create revision
// is the token's; Done closes at once. It returns nil (also on a retry),
// ErrNotHeld wrapping the loss if the hold was lost or unlocked, or ctx's
// cause, etcd's error or ErrClientClosed, after which Unlock may be retried
// and the key is deleted in the background once etcd answers. Before the
// minimum hold (WithMinHold) has passed, it moves the key to a lease that
// expires at the minimum instead, in one more round trip (the lease grant;
// if that fails, the key is deleted as without a minimum, and logged).
func (h *Hold) Unlock(ctx context.Context) error {
	defer h.end()
	if min := h.p.Cfg.MinHold; min > 0 && h.Err() == nil {
		if rest := min - time.Since(h.granted); rest > 0 {
			return h.park(ctx, rest)
		}
	}
	return h.notHeld(h.h.Release(ctx))
}

// park ends the hold, keeping its key for rest more: on a fresh lease of
// that TTL, which nobody renews.
func (h *Hold) park(ctx context.Context, rest time.Duration) error {
	if context.Cause(ctx) != nil || h.p.Q.Client.Ctx().Err() != nil {
		// Release sends nothing, ends the hold, and returns the cause (or
		// ErrClientClosed).
		return h.h.Release(ctx)
	}
	ttl := int64((rest + time.Second - 1) / time.Second)
	// One more round trip than a plain Unlock, only for an early one: the
	// parked key needs a lease of its own, since the hold's lease lives on
	// with the Mutex (or session) for its later holds.
	g, err := h.p.Q.Client.Grant(ctx, ttl)
	if err != nil {
		// Unlock as without a minimum: a key left on the hold's lease
		// would block others for as long as that lease lives.
		h.p.Cfg.Logger.Warn("minimum hold not kept: lease grant failed", zap.Stringer("token", h.Token()), zap.Error(err))
		return h.h.Release(ctx)
	}
	// If the hold was lost meanwhile, the Txn puts nothing and the unused
	// lease expires by itself within rest.
	return h.notHeld(h.h.Park(ctx, g.ID))
}

// notHeld returns err, a release's, or, after the maximum hold released
// the hold, ErrNotHeld wrapping that loss.
func (h *Hold) notHeld(err error) error {
	var lost *LostError
	if errors.Is(err, ErrNotHeld) && errors.As(context.Cause(h.ctx), &lost) && lost.Cause == ErrMaxHold {
		return fmt.Errorf("%w: %w", ErrNotHeld, lost)
	}
	return err
}

// run runs fn under the hold and unlocks it; see Mutex.Do.
func (h *Hold) run(ctx context.Context, fn func(context.Context, fencing.Token) error) error {
	return runHeld(ctx, h.Context(), h.Unlock, func(fctx context.Context) error { return fn(fctx, h.Token()) })
}

// runHeld runs fn with a context cancelled when held (a hold's context)
// ends or ctx does, then unlocks on a context of its own bounded by
// CleanupTimeout, and returns fn's error joined with the loss, if held
// was lost, else with unlock's.
func runHeld(ctx, held context.Context, unlock func(context.Context) error, fn func(context.Context) error) error {
	fctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(held, func() { cancel(context.Cause(held)) })
	ferr := fn(fctx)
	stop()
	cancel(nil)
	var lost error
	if held.Err() != nil {
		lost = context.Cause(held)
	}
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), queue.CleanupTimeout)
	defer ucancel()
	uerr := unlock(uctx)
	if errors.Is(lost, ErrLost) {
		return errors.Join(ferr, lost)
	}
	return errors.Join(ferr, uerr)
}
