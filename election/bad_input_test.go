package election_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/testutil"
)

// rpcClient returns a new client of the shared server whose calls are
// counted, closed at cleanup.
func (e *env) rpcClient() (*clientv3.Client, *integration.RPCCounter) { return testutil.RPCClient(e.t) }

func leadNever(t *testing.T) election.Callbacks {
	return election.Callbacks{
		Lead: func(context.Context, *election.Term) error {
			t.Error("Lead called")
			return nil
		},
		OnNewLeader: func(election.Leader) {},
	}
}

// TestBadInputNew: New refuses every bad argument with a matchable error,
// without I/O, and accepts a name of exactly MaxNameLen bytes.
func TestBadInputNew(t *testing.T) {
	e := newEnv(t)
	cli, calls := e.rpcClient()
	s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cases := []struct {
		name string
		cli  *clientv3.Client
		elec string
		opts []election.Option
		want error
	}{
		{"nil client", nil, "x", nil, election.ErrNilClient},
		{"empty name", cli, "", nil, election.ErrInvalidName},
		{"name over max", cli, strings.Repeat("n", election.MaxNameLen+1), nil, election.ErrInvalidName},
		{"name not utf8", cli, "\xc3", nil, election.ErrInvalidName},
		{"namespace over max", cli, "x", []election.Option{election.WithNamespace(strings.Repeat("n", 257))}, election.ErrInvalidNamespace},
		{"namespace not utf8", cli, "x", []election.Option{election.WithNamespace("\xff/")}, election.ErrInvalidNamespace},
		{"zero ttl", cli, "x", []election.Option{election.WithTTL(0)}, election.ErrInvalidOption},
		{"negative ttl", cli, "x", []election.Option{election.WithTTL(-time.Second)}, election.ErrInvalidOption},
		{"sub-second ttl", cli, "x", []election.Option{election.WithTTL(time.Millisecond)}, election.ErrInvalidOption},
		{"fractional ttl", cli, "x", []election.Option{election.WithTTL(1001 * time.Millisecond)}, election.ErrInvalidOption},
		{"huge ttl", cli, "x", []election.Option{election.WithTTL(9_000_000_001 * time.Second)}, election.ErrInvalidOption},
		{"zero margin", cli, "x", []election.Option{election.WithSafetyMargin(0)}, election.ErrInvalidOption},
		{"negative margin", cli, "x", []election.Option{election.WithSafetyMargin(-time.Second)}, election.ErrInvalidOption},
		{"margin half ttl", cli, "x", []election.Option{election.WithTTL(2 * time.Second), election.WithSafetyMargin(time.Second)}, election.ErrInvalidOption},
		{"margin over ttl", cli, "x", []election.Option{election.WithTTL(2 * time.Second), election.WithSafetyMargin(time.Minute)}, election.ErrInvalidOption},
		{"session and ttl", cli, "x", []election.Option{election.WithSession(s), election.WithTTL(5 * time.Second)}, election.ErrInvalidOption},
		{"nil session", cli, "x", []election.Option{election.WithSession(nil)}, election.ErrInvalidOption},
		{"zero option", cli, "x", []election.Option{nil}, election.ErrInvalidOption},
	}
	before := calls.Snapshot()
	for _, c := range cases {
		el, err := election.New(c.cli, c.elec, append([]election.Option{election.WithNamespace(e.ns)}, c.opts...)...)
		if !errors.Is(err, c.want) || el != nil {
			t.Errorf("New, %s = %v, %v; want %v", c.name, el, err, c.want)
		}
	}
	if got := calls.Since(before); got != nil {
		t.Errorf("refused New asked etcd %v, want nothing", got)
	}
	el, err := election.New(cli, strings.Repeat("n", election.MaxNameLen), election.WithNamespace(e.ns), election.WithTTL(2*time.Second))
	if err != nil {
		t.Fatalf("New with a name of MaxNameLen bytes: %v", err)
	}
	defer el.Close()
	term := mustCampaign(t, el, strings.Repeat("v", election.MaxValueLen))
	if err := term.Proclaim(ctxT(t, 5*time.Second), strings.Repeat("w", election.MaxValueLen)); err != nil {
		t.Fatalf("Proclaim of MaxValueLen bytes: %v", err)
	}
	mustResign(t, term)
}

// TestBadInputValue: a value over MaxValueLen is refused by Campaign,
// Proclaim and Run with ErrInvalidValue, without I/O, and the term that
// was refused a Proclaim keeps its value.
func TestBadInputValue(t *testing.T) {
	e := newEnv(t)
	cli, calls := e.rpcClient()
	el := e.election(cli)
	term := mustCampaign(t, el, "v")
	long := strings.Repeat("x", election.MaxValueLen+1)
	ctx := ctxT(t, 10*time.Second)
	before := calls.Snapshot()
	if _, err := el.Campaign(ctx, long); !errors.Is(err, election.ErrInvalidValue) {
		t.Errorf("Campaign = %v, want ErrInvalidValue", err)
	}
	if err := term.Proclaim(ctx, long); !errors.Is(err, election.ErrInvalidValue) {
		t.Errorf("Proclaim = %v, want ErrInvalidValue", err)
	}
	if err := el.Run(ctx, long, leadNever(t)); !errors.Is(err, election.ErrInvalidValue) {
		t.Errorf("Run = %v, want ErrInvalidValue", err)
	}
	if err := el.Run(ctx, "v", election.Callbacks{}); !errors.Is(err, election.ErrInvalidOption) {
		t.Errorf("Run without Lead = %v, want ErrInvalidOption", err)
	}
	if got := calls.Since(before); got != nil {
		t.Errorf("refused calls asked etcd %v, want nothing", got)
	}
	if v := term.Value(); v != "v" {
		t.Errorf("Value after a refused Proclaim = %q, want %q", v, "v")
	}
	mustResign(t, term)
}

// TestBadInputEndedContext: every blocking call given a context that had
// already ended returns its error (context.Cause) at once, asks etcd
// nothing and leaves no key.
func TestBadInputEndedContext(t *testing.T) {
	e := newEnv(t)
	cli, calls := e.rpcClient()
	fresh := e.election(cli) // no lease yet
	live := e.election(cli)  // a term and a live lease
	term := mustCampaign(t, live, "v")
	for _, c := range endedContexts() {
		for _, op := range []struct {
			name string
			run  func(context.Context) error
		}{
			{"Campaign", func(ctx context.Context) error {
				if tm, err := fresh.Campaign(ctx, "v"); tm != nil {
					return errors.New("elected")
				} else {
					return err
				}
			}},
			{"Campaign with a live lease", func(ctx context.Context) error {
				if tm, err := live.Campaign(ctx, "v"); tm != nil {
					return errors.New("elected")
				} else {
					return err
				}
			}},
			{"Run", func(ctx context.Context) error { return fresh.Run(ctx, "v", leadNever(t)) }},
			{"Leader", func(ctx context.Context) error {
				_, err := fresh.Leader(ctx)
				return err
			}},
			{"Proclaim", func(ctx context.Context) error { return term.Proclaim(ctx, "w") }},
		} {
			before := calls.Snapshot()
			if err := op.run(c.Ctx); !errors.Is(err, c.Want) {
				t.Errorf("%s with a %s context = %v, want %v", op.name, c.Name, err, c.Want)
			}
			if got := calls.Since(before); got != nil {
				t.Errorf("%s with a %s context asked etcd %v, want nothing", op.name, c.Name, got)
			}
		}
		before := calls.Snapshot()
		if _, ok := <-fresh.Observe(c.Ctx); ok {
			t.Errorf("Observe with a %s context sent a leader, want the channel closed", c.Name)
		}
		if got := calls.Since(before); got != nil {
			t.Errorf("Observe with a %s context asked etcd %v, want nothing", c.Name, got)
		}
	}
	if v := term.Value(); v != "v" {
		t.Errorf("Value after Proclaims that were not sent = %q, want %q", v, "v")
	}
	// Resign with an ended context ends the term at once; the key goes in
	// the background.
	if err := term.Resign(endedContexts()[0].Ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Resign with a cancelled context = %v, want context.Canceled", err)
	}
	if live.IsLeader() || term.Err() == nil {
		t.Error("term still current after Resign")
	}
	waitKeys(t, e.cli, live.Prefix(), 0)
	integration.RequireEmpty(t, e.cli, e.ns)
}

// TestBadInputUseAfterClose: after Close, every method says so (ErrClosed,
// or ErrNotLeader for the terms it resigned), without asking etcd, and
// Close again or concurrently returns nil.
func TestBadInputUseAfterClose(t *testing.T) {
	e := newEnv(t)
	cli, calls := e.rpcClient()
	el, err := election.New(cli, "x", election.WithNamespace(e.ns), election.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	term := mustCampaign(t, el, "v")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = el.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Close %d = %v, want nil", i, err)
		}
	}
	if err := el.Close(); err != nil {
		t.Errorf("Close again = %v, want nil", err)
	}
	ctx := ctxT(t, 10*time.Second)
	before := calls.Snapshot()
	if _, err := el.Campaign(ctx, "v"); !errors.Is(err, election.ErrClosed) {
		t.Errorf("Campaign after Close = %v, want ErrClosed", err)
	}
	if err := el.Run(ctx, "v", leadNever(t)); !errors.Is(err, election.ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if l, err := el.Leader(ctx); !errors.Is(err, election.ErrClosed) {
		t.Errorf("Leader after Close = %v, %v; want ErrClosed", l, err)
	}
	if _, ok := <-el.Observe(ctx); ok {
		t.Error("Observe after Close sent a leader, want the channel closed")
	}
	if err := term.Proclaim(ctx, "w"); !errors.Is(err, election.ErrNotLeader) || !errors.Is(err, election.ErrResigned) {
		t.Errorf("Proclaim after Close = %v, want ErrNotLeader wrapping ErrResigned", err)
	}
	if err := term.Resign(ctx); !errors.Is(err, election.ErrNotLeader) {
		t.Errorf("Resign after Close = %v, want ErrNotLeader", err)
	}
	if err := el.Check(time.Second); err != nil {
		t.Errorf("Check after Close = %v, want nil", err)
	}
	if el.IsLeader() {
		t.Error("IsLeader after Close")
	}
	if got := calls.Since(before); got != nil {
		t.Errorf("calls after Close asked etcd %v, want nothing", got)
	}
	integration.RequireEmpty(t, e.cli, e.ns)
}

// TestBadInputClosedClient: Leader on a closed client returns
// ErrClientClosed, as every other call does, not the context.Canceled that
// clientv3 reports.
func TestBadInputClosedClient(t *testing.T) {
	e := newEnv(t)
	cli, _ := e.rpcClient()
	el := e.election(cli)
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := el.Leader(ctxT(t, 5*time.Second)); !errors.Is(err, election.ErrClientClosed) || errors.Is(err, context.Canceled) {
		t.Fatalf("Leader on a closed client = %v, want ErrClientClosed (and not context.Canceled)", err)
	}
}

// TestBadInputEndedSession: a session closed, or whose lease was revoked
// behind its back, makes Campaign and Run fail with ErrSessionExpired,
// leaving no key.
func TestBadInputEndedSession(t *testing.T) {
	for _, how := range []string{"closed", "revoked"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(5))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if how == "closed" {
				err = s.Close()
			} else {
				_, err = e.cli.Revoke(ctxT(t, 5*time.Second), s.Lease())
			}
			if err != nil {
				t.Fatal(err)
			}
			el := e.election(e.cli, election.WithSession(s))
			if _, err := el.Campaign(ctxT(t, 10*time.Second), "v"); !errors.Is(err, election.ErrSessionExpired) {
				t.Errorf("Campaign on a %s session = %v, want ErrSessionExpired", how, err)
			}
			if err := el.Run(ctxT(t, 10*time.Second), "v", leadNever(t)); !errors.Is(err, election.ErrSessionExpired) {
				t.Errorf("Run on a %s session = %v, want ErrSessionExpired", how, err)
			}
			integration.RequireEmpty(t, e.cli, e.ns)
		})
	}
}

// TestBadInputNilContext: a nil context is a programming error; Observe
// panics in the caller's goroutine, where it can be seen (and recovered),
// as Campaign, Run and Leader do, not in a goroutine of its own, which
// would crash the process.
func TestBadInputNilContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	var nilCtx context.Context
	for _, c := range []struct {
		name string
		call func()
	}{
		{"Observe", func() { el.Observe(nilCtx) }},
		{"Campaign", func() { _, _ = el.Campaign(nilCtx, "v") }},
		{"Run", func() { _ = el.Run(nilCtx, "v", leadNever(t)) }},
		{"Leader", func() { _, _ = el.Leader(nilCtx) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s(nil) did not panic", c.name)
				}
			}()
			c.call()
		}()
	}
}
