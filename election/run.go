package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/internal/backoff"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// Callbacks are what Run calls. Only Lead is required.
type Callbacks struct {
	// Lead is the leader's work. It runs on a goroutine that Run waits for,
	// with a context cancelled when the term is lost or Run's context ends
	// (context.Cause says which), and the term, whose Token fences the
	// work's writes. When Lead returns, for any reason, Run resigns if the
	// term is still current and campaigns again.
	//
	// Lead must return promptly once its context is cancelled: Run waits for
	// it, and logs a hazard if it has not returned 1s after the term was
	// lost, because the next leader may be acting by then. When Run's own
	// context ended instead, the term stays this process's (its lease kept
	// renewed) until Run resigns it after Lead returns: no hazard, unless
	// the term is lost meanwhile, but a warning after 1s, since no standby
	// can lead until then, and Check fails. Writes fenced with the term's
	// token are refused either way.
	Lead func(ctx context.Context, term *Term) error
	// OnStoppedLeading, if set, runs after Lead has returned and the term
	// has ended (resigned or lost), with Lead's error. It never runs for a
	// candidate that did not lead. It runs on Run's goroutine, before the
	// next campaign, which waits for it.
	OnStoppedLeading func(term *Term, err error)
	// OnNewLeader, if set, receives every change of leader, including the
	// zero Leader for "no leader", from one goroutine that Run owns and
	// waits for before it returns. An OnNewLeader that blocks keeps Run
	// (and Close) from returning and holds up the changes after it.
	OnNewLeader func(Leader)
}

// runState is Run's view of the work in progress, for Check.
type runState struct {
	term   *Term
	stopAt time.Time // when Run's ctx ended, the term still current, while the work ran
	lostAt time.Time // when the term was lost while the work ran; zero until then
}

// runCtl is one Run in progress, for Close.
type runCtl struct {
	cancel context.CancelCauseFunc // ends the Run's context
	done   chan struct{}           // closed when the Run returns
}

// Backoff of Run: after a failed campaign, and after leader work that
// returned while its term was still current.
const (
	minPause = 50 * time.Millisecond
	maxPause = 5 * time.Second
)

// Run campaigns with value and leads by calling cb.Lead, again and again,
// until ctx ends or the Election is closed; then it cancels Lead's context,
// waits for Lead, and resigns so that a standby leads at once. A lost term
// is campaigned for at once; a Lead that returns with its term current is
// followed by a pause (50ms doubling to 5s). Its errors: see the package doc.
func (e *Election) Run(ctx context.Context, value string, cb Callbacks) error {
	if cb.Lead == nil {
		return fmt.Errorf("%w: Run needs Callbacks.Lead", ErrInvalidOption)
	}
	if err := checkValue(value); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctl := &runCtl{cancel: cancel, done: make(chan struct{})}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	if len(e.runs) > 0 {
		e.mu.Unlock()
		return ErrRunning
	}
	e.runs[ctl] = struct{}{}
	e.mu.Unlock()
	defer func() { // last: after every goroutine below has returned
		e.mu.Lock()
		delete(e.runs, ctl)
		e.mu.Unlock()
		close(ctl.done)
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	if cb.OnNewLeader != nil {
		ch := e.Observe(octx)
		wg.Go(func() {
			for l := range ch {
				cb.OnNewLeader(l)
			}
		})
	}
	campaignPause, workPause := backoff.New(minPause, maxPause), backoff.New(minPause, maxPause)
	for {
		term, err := e.Campaign(ctx, value)
		switch {
		case ctx.Err() != nil:
			if term != nil {
				// Won as ctx ended: the key must not outlive Run on a lease
				// that is kept renewed.
				e.resign(ctx, term)
			}
			return context.Cause(ctx)
		case errors.Is(err, ErrClosed):
			return err
		case errors.Is(err, ErrSessionExpired) && e.p.Cfg.Session != nil:
			return err
		case err != nil && e.permanent(err):
			e.lg.Error("campaign failed; not retrying", zap.Error(err))
			return fmt.Errorf("election: Run: campaign: %w", err)
		case err != nil:
			e.lg.Warn("campaign failed; retrying", zap.Error(err), zap.Duration("pause", campaignPause.Next()))
			if campaignPause.Sleep(ctx) != nil {
				return context.Cause(ctx)
			}
			continue
		}
		campaignPause.Reset()
		began := time.Now()
		lost, leadErr := e.lead(ctx, term, cb.Lead)
		if cb.OnStoppedLeading != nil {
			cb.OnStoppedLeading(term, leadErr)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		// If lead's resign failed, the old key is still queued ahead of the
		// next campaign's, on the same lease, which is kept renewed: the
		// campaign below waits behind it until the key is deleted in the
		// background (the lease's keeper retries the guarded delete after
		// each successful renewal) or goes with the lease. Until then no
		// other candidate can lead either, and the delete lands as soon as
		// etcd answers the keeper, so campaigning at once is fine: it does
		// not wait forever.
		if time.Since(began) > maxPause {
			workPause.Reset() // a term that lasted: failures are not piling up
		}
		if lost {
			// Lost: campaign again at once. (Lead's error is most likely
			// its context's.)
			e.lg.Info("leadership lost; campaigning again", zap.Stringer("term", term.Token()), zap.NamedError("leadErr", leadErr))
			continue
		}
		// Lead gave the term up: returned with it current, or resigned
		// it. Pause before campaigning again, so that work that fails (or
		// returns) at once does not make the candidates take turns as fast
		// as etcd allows.
		if leadErr != nil {
			e.lg.Warn("leader work failed; campaigning again", zap.Error(leadErr), zap.Duration("pause", workPause.Next()))
		} else {
			e.lg.Info("leader work returned; campaigning again", zap.Duration("pause", workPause.Next()))
		}
		if workPause.Sleep(ctx) != nil {
			return context.Cause(ctx)
		}
	}
}

// lead runs one term: Lead on its own goroutine, cancelled on loss or when
// ctx ends, then a resign on a bounded context. It returns whether the term
// had been lost (not resigned) when Lead returned, and Lead's error.
func (e *Election) lead(ctx context.Context, term *Term, work func(context.Context, *Term) error) (lost bool, err error) {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(term.Context(), func() { cancel(context.Cause(term.Context())) })
	defer stop()
	st := &runState{term: term}
	e.mu.Lock()
	e.running = st
	e.mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- work(wctx, term) }()
	select {
	case err = <-done:
	case <-wctx.Done():
		err = e.waitWork(done, st, term, context.Cause(wctx))
	}
	// A term that Lead resigned itself was given up, not lost.
	lost = errors.Is(term.Err(), ErrLost)
	// The work has returned: Check has nothing left to watch, also while
	// the resign below waits for an unreachable etcd.
	e.mu.Lock()
	e.running = nil
	e.mu.Unlock()
	e.resign(ctx, term)
	return lost, err
}

// resign resigns term on a bounded context that ctx's end does not cut
// short, and logs a failure.
func (e *Election) resign(ctx context.Context, term *Term) {
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), queue.CleanupTimeout)
	defer rcancel()
	if rerr := term.Resign(rctx); rerr != nil && !errors.Is(rerr, ErrNotLeader) {
		// The term has ended for this process all the same (its Context is
		// cancelled). The lease's keeper, which goes on renewing the lease,
		// deletes the key, guarded by its revision, once a renewal gets
		// through; otherwise the key goes with the lease (which Close
		// revokes, unless it is the caller's session).
		e.lg.Warn("resign failed; the leader key will be deleted in the background once etcd answers, or go with its lease",
			zap.Stringer("term", term.Token()), zap.Error(rerr))
	}
}

// waitWork waits for the leader's work after its context was cancelled,
// logging a hazard if it outlives the time the next leader may need.
func (e *Election) waitWork(done <-chan error, st *runState, term *Term, why error) error {
	// Lost: the next leader may act at once (the key deleted or the lease
	// revoked) or soon (the deadline passed). Not lost (Run's ctx ended):
	// nobody else leads before the resign that follows the work, unless
	// the term is lost meanwhile; the lease is kept renewed. The hazard,
	// and Check's clock, start at the loss.
	if term.Err() == nil {
		e.mu.Lock()
		st.stopAt = time.Now()
		e.mu.Unlock()
		t := time.NewTimer(time.Second)
		defer t.Stop()
		for lost := false; !lost; {
			select {
			case err := <-done:
				return err
			case <-term.Done():
				why, lost = context.Cause(term.Context()), true
			case <-t.C:
				// Not a hazard (the term is held), but the work is stuck:
				// no one else can lead until it returns.
				e.lg.Warn("leader work has not returned 1s after Run's context ended; leadership is held until it does",
					zap.Stringer("term", term.Token()))
			}
		}
	}
	e.mu.Lock()
	st.lostAt = time.Now()
	e.mu.Unlock()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		e.lg.Error("HAZARD: leader work still running after leadership ended; another leader may be acting, only fenced writes are safe",
			zap.Stringer("term", term.Token()), zap.NamedError("why", why))
	}
	return <-done
}

// Check returns ErrUnhealthy when Run's leader work still runs more than
// tolerance after its term ended or Run's context ended, or past the term's
// lease deadline (a process paused so long its timers did not fire): wire
// it to a liveness probe. It does no I/O; a negative tolerance returns
// ErrInvalidOption.
func (e *Election) Check(tolerance time.Duration) error {
	if tolerance < 0 {
		return fmt.Errorf("%w: negative Check tolerance %v", ErrInvalidOption, tolerance)
	}
	e.mu.Lock()
	st := e.running
	var lostAt, stopAt time.Time
	if st != nil {
		lostAt, stopAt = st.lostAt, st.stopAt
	}
	e.mu.Unlock()
	if st == nil {
		return nil
	}
	now := time.Now()
	if !lostAt.IsZero() && now.Sub(lostAt) > tolerance {
		return errors.Join(ErrUnhealthy, errors.New("election: leader work still running after its term ended"))
	}
	if !stopAt.IsZero() && now.Sub(stopAt) > tolerance {
		return errors.Join(ErrUnhealthy, errors.New("election: leader work still running after Run's context ended"))
	}
	if st.term.Err() == nil && now.Sub(st.term.Deadline()) > tolerance {
		return errors.Join(ErrUnhealthy, errors.New("election: term deadline passed without renewal"))
	}
	return nil
}

// permanent reports whether a campaign error will recur however often Run
// retries: bad input or configuration, a request etcd refuses as such, or
// a closed etcd client.
func (e *Election) permanent(err error) bool {
	switch {
	case errors.Is(err, ErrInvalidValue), errors.Is(err, ErrInvalidOption),
		errors.Is(err, ErrInvalidName), errors.Is(err, ErrInvalidNamespace),
		errors.Is(err, ErrNilClient):
		return true
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrRequestTooLarge),
		errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrUserNotFound),
		errors.Is(err, rpctypes.ErrUserEmpty):
		return true
	}
	return e.p.Q.Client.Ctx().Err() != nil
}
