package election_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
)

// TestFailoverAfterCrash cuts the leader's client off (as if its process
// died): the standby must lead once the leader's lease expires, and the
// cut-off leader must have been told first. The failover time is logged,
// not asserted: the bound of TTL + 10 s only detects a hang.
func TestFailoverAfterCrash(t *testing.T) {
	e := newEnv(t)
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)

	const ttl = 2 * time.Second
	const margin = 400 * time.Millisecond // the default: TTL/5
	const hang = ttl + 10*time.Second     // a hang detector, not a speed check
	leader := e.election(cli, election.WithTTL(ttl))
	term := mustCampaign(t, leader, "leader")
	standby := e.election(e.cli)
	got := make(chan campaign, 1)
	ctx := ctxT(t, 2*hang) // outlasts the waits below, which report a hang
	go func() {
		st, err := standby.Campaign(ctx, "standby")
		got <- campaign{value: "standby", term: st, err: err}
	}()
	waitKeys(t, e.cli, leader.Prefix(), 2)

	p.Blackhole()
	defer p.Unblackhole()
	// The last renewal that can have been acknowledged was sent at
	// Deadline - TTL + margin; read it once the cut is in place.
	lastSent := term.Deadline().Add(margin - ttl)
	hung := time.After(time.Until(lastSent.Add(hang)))
	// Wait for both events at once, so that their order is what happened.
	var (
		told, led time.Time
		t2        *election.Term
		done      = term.Done()
	)
	for told.IsZero() || led.IsZero() {
		select {
		case <-done:
			told, done = time.Now(), nil
		case c := <-got:
			t2, led = mustTerm(t, c), time.Now()
		case <-hung:
			t.Fatalf("within %v of the leader's last renewal: old leader told %v, standby leading %v", hang, !told.IsZero(), !led.IsZero())
		}
	}
	if !told.Before(led) {
		t.Fatalf("standby led %v before the old leader was told", told.Sub(led))
	}
	failover := led.Sub(lastSent)
	t.Logf("failover %v after the last renewal (TTL %v); old leader told %v before", failover, ttl, led.Sub(told))
	if !errors.Is(term.Err(), election.ErrDeadline) {
		t.Errorf("old term's Err = %v, want ErrDeadline", term.Err())
	}
	mustResign(t, t2)
	p.Unblackhole()
}

// TestCheckAndHazard: leader work that ignores its context is logged as a
// hazard and makes Check fail, and Run still waits for it.
func TestCheckAndHazard(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zap.WarnLevel)
	el, err := election.New(e.cli, "leader", election.WithNamespace(e.ns), election.WithTTL(2*time.Second), election.WithLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	defer el.Close()
	if err := el.Check(0); err != nil {
		t.Fatalf("Check while not leading: %v", err)
	}
	leading := make(chan *election.Term)
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() {
		runDone <- el.Run(ctx, "v", election.Callbacks{Lead: func(_ context.Context, term *election.Term) error {
			leading <- term
			<-release // ignores its context
			return nil
		}})
	}()
	term := <-leading
	if err := el.Check(time.Second); err != nil {
		t.Fatalf("Check while leading: %v", err)
	}
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), term.Token().Key); err != nil {
		t.Fatal(err)
	}
	<-term.Done()
	deadline := time.Now().Add(5 * time.Second)
	for el.Check(100*time.Millisecond) == nil {
		if time.Now().After(deadline) {
			t.Fatal("Check never failed while deposed work ran on")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := el.Check(100 * time.Millisecond); !errors.Is(err, election.ErrUnhealthy) {
		t.Fatalf("Check = %v, want ErrUnhealthy", err)
	}
	for logs.FilterMessageSnippet("HAZARD").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no hazard logged")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case <-runDone:
		t.Fatal("Run returned while leader work was still running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if err := el.Check(0); err != nil {
		t.Fatalf("Check after Run: %v", err)
	}
}
