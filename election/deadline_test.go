package election_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/internal/testctx"
)

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
		term, err := el.Campaign(testctx.LateTimer(t, in, lag), "v")
		check("Campaign", err)
		if err != nil {
			term = mustCampaign(t, el, "v")
		}
		check("Proclaim", term.Proclaim(testctx.LateTimer(t, in, lag), "w"))
		_, err = el.Leader(testctx.LateTimer(t, in, lag))
		check("Leader", err)
		if err := term.Resign(testctx.LateTimer(t, in, lag)); err != nil {
			check("Resign", err)
			waitKeys(t, e.cli, e.ns, 0) // the keeper deletes the key Resign could not
		}
	}
	if failed == 0 {
		t.Fatal("no request failed: the deadlines were never due in flight")
	}
	t.Logf("%d requests failed by their deadline", failed)
}
