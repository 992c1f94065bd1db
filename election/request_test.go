package election_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/election"
)

// A leader asked to step down in Run returns from Lead; the standby leads,
// and the request goes with the term.
func TestRequestResignHonouredInRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.election(e.cli), e.election(e.client())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	led := make(chan string, 4)
	run := func(el *election.Election, v string) chan error {
		done := make(chan error, 1)
		go func() {
			done <- el.Run(ctx, v, election.Callbacks{Lead: func(ctx context.Context, term *election.Term) error {
				led <- v
				select {
				case <-term.ResignRequested():
					return nil // step down
				case <-ctx.Done():
					return nil
				}
			}})
		}()
		return done
	}
	da := run(a, "a")
	if v := <-led; v != "a" {
		t.Fatalf("first leader %q, want a", v)
	}
	db := run(b, "b")
	waitKeys(t, e.cli, a.Prefix(), 2)
	l, err := b.RequestResign(ctxT(t, 5*time.Second))
	if err != nil || l.Value != "a" {
		t.Fatalf("RequestResign = %v, %v; want a asked", l, err)
	}
	select {
	case v := <-led:
		if v != "b" {
			t.Fatalf("leader after the request: %q, want b", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the leader did not step down")
	}
	cancel()
	for _, d := range []chan error{da, db} {
		if err := <-d; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	}
	waitKeys(t, e.cli, e.ns+"revoke/", 0)
}

// An ignored request leaves the term as it is, until it resigns.
func TestRequestResignIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	term := mustCampaign(t, el, "a")
	if _, err := election.RequestResign(ctxT(t, 5*time.Second), e.client(), e.ns, "leader", "ops"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-term.ResignRequested():
	case <-time.After(10 * time.Second):
		t.Fatal("ResignRequested not closed")
	}
	l, err := el.Leader(ctxT(t, 5*time.Second))
	if err != nil || l.Token != term.Token() || term.Err() != nil {
		t.Fatalf("after an ignored request: leader %v, %v, term %v", l, err, term.Err())
	}
	if err := term.Resign(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestRequestResignBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t, 5*time.Second)
	if _, err := election.RequestResign(ctx, e.cli, e.ns, "leader", ""); !errors.Is(err, election.ErrNoLeader) {
		t.Errorf("nobody leads: %v, want ErrNoLeader", err)
	}
	if _, err := election.RequestResign(ctx, nil, e.ns, "leader", ""); !errors.Is(err, election.ErrNilClient) {
		t.Errorf("nil client: %v", err)
	}
	if _, err := election.RequestResign(ctx, e.cli, e.ns, "", ""); !errors.Is(err, election.ErrInvalidName) {
		t.Errorf("empty name: %v", err)
	}
	if _, err := election.RequestResign(ctx, e.cli, e.ns, "leader", strings.Repeat("x", election.MaxRequesterLen+1)); !errors.Is(err, election.ErrInvalidOption) {
		t.Errorf("long requester: %v", err)
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := election.RequestResign(ended, e.cli, e.ns, "leader", ""); !errors.Is(err, context.Canceled) {
		t.Errorf("ended context: %v", err)
	}
	el := e.election(e.cli)
	if err := el.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := el.RequestResign(ctx); !errors.Is(err, election.ErrClosed) {
		t.Errorf("closed Election: %v", err)
	}
}
