package election_test

import (
	"context"
	"errors"
	"testing"
	"time"
)

// lagCtx is a context whose timer runs late, as on a loaded machine: its
// Deadline is due after in, but Done closes, with context.DeadlineExceeded
// as its cause, only lag later.
type lagCtx struct {
	context.Context
	deadline time.Time
}

func (c lagCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func newLagCtx(t *testing.T, in, lag time.Duration) context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	tm := time.AfterFunc(in+lag, func() { cancel(context.DeadlineExceeded) })
	t.Cleanup(func() { tm.Stop(); cancel(nil) })
	return lagCtx{Context: ctx, deadline: time.Now().Add(in)}
}

// Campaign, Proclaim, Leader and Resign report the context's error, not
// etcd's "request timed out", for a request whose deadline passed at the
// server before the caller's timer fired.
func TestDeadlineBeforeTimerFires(t *testing.T) {
	e := newEnv(t)
	el := e.election(e.cli)
	const lag = 30 * time.Millisecond
	failed := 0
	check := func(what string, err error) {
		t.Helper()
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded):
			failed++
		default:
			t.Fatalf("%s = %v, want context.DeadlineExceeded", what, err)
		}
	}
	if err := mustCampaign(t, el, "warm").Resign(ctxT(t, 5*time.Second)); err != nil { // the lease is granted
		t.Fatal(err)
	}
	for i := range 40 {
		in := time.Duration(i) * 25 * time.Microsecond
		term, err := el.Campaign(newLagCtx(t, in, lag), "v")
		check("Campaign", err)
		if err != nil {
			term = mustCampaign(t, el, "v")
		}
		check("Proclaim", term.Proclaim(newLagCtx(t, in, lag), "w"))
		_, err = el.Leader(newLagCtx(t, in, lag))
		check("Leader", err)
		if err := term.Resign(newLagCtx(t, in, lag)); err != nil {
			check("Resign", err)
			waitKeys(t, e.cli, e.ns, 0) // the keeper deletes the key Resign could not
		}
	}
	if failed == 0 {
		t.Fatal("no request failed: the deadlines were never due in flight")
	}
	t.Logf("%d requests failed by their deadline", failed)
}
