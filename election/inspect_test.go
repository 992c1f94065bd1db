package election_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/election"
)

// TestInspect checks that Inspect shows the candidates in campaign order,
// the leader first and alone marked so, with the tokens their terms have,
// and that InspectAt reads the past.
func TestInspect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.election(e.client()), e.election(e.client()), e.election(e.client())
	prefix := election.KeyPrefix(e.ns, "leader")

	empty, err := election.Inspect(ctxT(t, 10*time.Second), e.cli, e.ns, "leader")
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if empty.Name != "leader" || empty.Namespace != e.ns || empty.Prefix != prefix || empty.Revision <= 0 ||
		len(empty.Candidates) != 0 || !empty.Leader().IsZero() {
		t.Fatalf("Inspect with no candidate = %+v", empty)
	}

	ta := mustCampaign(t, a, "a")
	ch := make(chan campaign, 2)
	goCampaign(t, b, "b", ch)
	waitKeys(t, e.cli, prefix, 2)
	goCampaign(t, c, "c", ch)
	waitKeys(t, e.cli, prefix, 3)

	s, err := election.Inspect(ctxT(t, 10*time.Second), e.cli, e.ns, "leader")
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if len(s.Candidates) != 3 {
		t.Fatalf("Inspect: %d candidates, want 3: %+v", len(s.Candidates), s.Candidates)
	}
	last := int64(0)
	for i, cd := range s.Candidates {
		want := []string{"a", "b", "c"}[i]
		if cd.Value != want || cd.Leader != (i == 0) || cd.Token.Key != cd.Key || cd.Token.Revision <= last ||
			cd.Token.Revision > s.Revision || cd.Lease == 0 {
			t.Errorf("candidate %d = %+v: want value %q, leader %v, a token of its key above %d", i, cd, want, i == 0, last)
		}
		last = cd.Token.Revision
	}
	if l := s.Leader(); l.Token != ta.Token() || l.Value != "a" || l.Lease != ta.Lease() {
		t.Errorf("Leader() = %v, want a's term %s", l, ta.Token())
	}

	mustResign(t, ta)
	tb := mustTerm(t, <-ch)
	now, err := election.Inspect(ctxT(t, 10*time.Second), e.cli, e.ns, "leader")
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if l := now.Leader(); l.Token != tb.Token() || len(now.Candidates) != 2 {
		t.Errorf("after a resigned: leader %v of %d candidates, want b's term %s of 2", l, len(now.Candidates), tb.Token())
	}
	past, err := election.InspectAt(ctxT(t, 10*time.Second), e.cli, e.ns, "leader", s.Revision)
	if err != nil {
		t.Fatalf("InspectAt: %v", err)
	}
	if past.Revision != s.Revision || len(past.Candidates) != 3 || past.Leader() != s.Leader() {
		t.Errorf("InspectAt(%d) = %+v, want what Inspect read then: %+v", s.Revision, past, s)
	}
	mustResign(t, tb)
	mustResign(t, mustTerm(t, <-ch))
}

// TestInspectBadInput checks that bad arguments fail without I/O, with the
// package's sentinels.
func TestInspectBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t, 10*time.Second)
	if _, err := election.Inspect(ctx, nil, e.ns, "x"); !errors.Is(err, election.ErrNilClient) {
		t.Errorf("nil client: %v, want ErrNilClient", err)
	}
	if _, err := election.Inspect(ctx, e.cli, e.ns, ""); !errors.Is(err, election.ErrInvalidName) {
		t.Errorf("empty name: %v, want ErrInvalidName", err)
	}
	if _, err := election.Inspect(ctx, e.cli, "\xff", "x"); !errors.Is(err, election.ErrInvalidNamespace) {
		t.Errorf("bad namespace: %v, want ErrInvalidNamespace", err)
	}
	if err := election.ValidateName(string(make([]byte, election.MaxNameLen+1))); !errors.Is(err, election.ErrInvalidName) {
		t.Errorf("ValidateName(too long) = %v, want ErrInvalidName", err)
	}
	if err := election.ValidateName("x"); err != nil {
		t.Errorf("ValidateName(x) = %v", err)
	}
	cctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("stop")
	cancel(cause)
	if _, err := election.Inspect(cctx, e.cli, e.ns, "x"); !errors.Is(err, cause) {
		t.Errorf("ended context: %v, want its cause", err)
	}
}
