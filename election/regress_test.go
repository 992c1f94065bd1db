package election_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
)

// prompt bounds how long a call that must not wait for its context may take
// on a slow, shared machine; the contexts given are much longer.
const prompt = 10 * time.Second

func mustNotLead(t *testing.T) func(context.Context, *election.Term) error {
	return func(context.Context, *election.Term) error {
		t.Error("Lead called")
		return nil
	}
}

// runPrompt runs el.Run with a 30s context and fails t unless it returns
// before that context ends, with an error that is not the context's.
func runPrompt(t *testing.T, el *election.Election, value string, cb election.Callbacks) error {
	t.Helper()
	err := el.Run(ctxT(t, 30*time.Second), value, cb)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v: it retried until its context ended", err)
	}
	return err
}

// TestRunOversizedValue: Run rejects a value Campaign would reject, at once,
// instead of retrying until its context ends, and leaves no key behind.
func TestRunOversizedValue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	err := runPrompt(t, el, strings.Repeat("x", election.MaxValueLen+1), election.Callbacks{
		Lead:        mustNotLead(t),
		OnNewLeader: func(election.Leader) {},
	})
	if !errors.Is(err, election.ErrInvalidValue) {
		t.Fatalf("Run = %v, want ErrInvalidValue", err)
	}
	integration.RequireEmpty(t, e.cli, e.ns)
	// A value of exactly MaxValueLen is fine.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = el.Run(ctx, strings.Repeat("x", election.MaxValueLen), election.Callbacks{
		Lead: func(ctx context.Context, term *election.Term) error {
			cancel()
			return nil
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a MaxValueLen value = %v", err)
	}
}

// TestRunWithoutLead: the error is ErrInvalidOption.
func TestRunWithoutLead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	if err := el.Run(ctxT(t, 30*time.Second), "v", election.Callbacks{}); !errors.Is(err, election.ErrInvalidOption) {
		t.Fatalf("Run without Lead = %v, want ErrInvalidOption", err)
	}
}

// TestRunSessionMarginTooLarge: a safety margin that does not fit the
// session's TTL is only found at the first campaign; Run must return it, not
// retry it forever.
func TestRunSessionMarginTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	el := e.election(cli, election.WithSession(s), election.WithSafetyMargin(time.Second))
	err = runPrompt(t, el, "v", election.Callbacks{Lead: mustNotLead(t)})
	if !errors.Is(err, election.ErrInvalidOption) {
		t.Fatalf("Run = %v, want ErrInvalidOption", err)
	}
	integration.RequireEmpty(t, e.cli, e.ns)
}

// TestRunClientClosed: with its etcd client closed, Run cannot ever
// campaign; it returns instead of retrying until its context ends.
func TestRunClientClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	el := e.election(cli)
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if err := runPrompt(t, el, "v", election.Callbacks{Lead: mustNotLead(t)}); !errors.Is(err, election.ErrClientClosed) || errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want ErrClientClosed (not context.Canceled)", err)
	}
}

// TestObserveAfterClose: Observe on a closed Election returns a closed
// channel.
func TestObserveAfterClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	if err := el.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case l, ok := <-el.Observe(context.Background()):
		if ok {
			t.Fatalf("Observe after Close sent %v", l)
		}
	case <-time.After(prompt):
		t.Fatal("Observe after Close: channel not closed")
	}
}

// TestObserveCloseRace: Observe concurrent with Close (a WaitGroup Add
// racing its Wait before the fix). Once both have returned, every channel
// Observe returned is closed.
func TestObserveCloseRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for range 10 {
		el := e.election(e.cli)
		const n = 8
		chs := make([]<-chan election.Leader, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				chs[i] = el.Observe(context.Background())
			})
		}
		wg.Go(func() {
			<-start
			if err := el.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		close(start)
		wg.Wait()
		for i, ch := range chs {
			// Close waited for every observer started before it, and
			// those started after got a closed channel.
			select {
			case l, ok := <-ch:
				if ok {
					t.Fatalf("channel %d: %v received after Close returned", i, l)
				}
			default:
				t.Fatalf("channel %d still open after Close returned", i)
			}
		}
	}
}

// TestObserveEndsWhenClientClosed: once the etcd client is closed, nothing
// can be observed; the channel is closed instead of re-reading forever.
func TestObserveEndsWhenClientClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	el := e.election(cli)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := el.Observe(ctx)
	select {
	case l := <-ch:
		if !l.IsZero() {
			t.Fatalf("first event %v, want no leader", l)
		}
	case <-time.After(prompt):
		t.Fatal("no first Observe event")
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(prompt)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				return
			}
			t.Logf("event %v after the client closed", l)
		case <-timeout:
			t.Fatal("Observe goes on after its client was closed")
		}
	}
}
