package election_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
)

// hookLogger returns a logger that calls f for every entry, and records
// the entries.
func hookLogger(f func(zapcore.Entry)) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core, zap.Hooks(func(en zapcore.Entry) error { f(en); return nil })), logs
}

// goRun runs el.Run with lead on a goroutine; the channel gets Run's
// result.
func goRun(ctx context.Context, el *election.Election, value string, lead func(context.Context, *election.Term) error) chan error {
	done := make(chan error, 1)
	go func() { done <- el.Run(ctx, value, election.Callbacks{Lead: lead}) }()
	return done
}

// leaderKeys returns the keys under the election's prefix, oldest first.
func leaderKeys(t *testing.T, cli *clientv3.Client, el *election.Election) []string {
	t.Helper()
	resp, err := cli.Get(ctxT(t, 5*time.Second), el.Prefix(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// TestRunResignsTermWonAsCtxEnds: when Run's context ends just as its
// campaign wins, Run resigns the term before it returns; before, the key
// stayed on a lease kept renewed, no standby could lead, and the next Run
// on the Election queued behind it for ever.
func TestRunResignsTermWonAsCtxEnds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lg, _ := hookLogger(func(en zapcore.Entry) {
		if en.Message == "elected" {
			cancel() // after the grant, before Campaign returns to Run
		}
	})
	el := e.election(e.cli, election.WithLogger(lg))
	err := el.Run(ctx, "r", election.Callbacks{Lead: func(ctx context.Context, _ *election.Term) error {
		<-ctx.Done()
		return nil
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if el.IsLeader() {
		t.Error("IsLeader after Run returned")
	}
	if keys := leaderKeys(t, e.cli, el); len(keys) != 0 {
		t.Fatalf("keys left after Run returned: %v", keys)
	}
}

// TestRunCampaignsAtOnceAfterLoss: a term lost (its key deleted here) is
// campaigned for again with no pause, however often it happens; before, the
// pause doubled with every loss, to 5 s, though every campaign won at once.
func TestRunCampaignsAtOnceAfterLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lg, logs := hookLogger(func(zapcore.Entry) {})
	el := e.election(e.cli, election.WithLogger(lg))
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *election.Term, 1)
	runDone := goRun(ctx, el, "r", func(ctx context.Context, term *election.Term) error {
		started <- term
		<-ctx.Done()
		return ctx.Err() // the usual idiom: a loss looks like a failure
	})
	term := <-started
	for range 6 {
		if _, err := e.cli.Delete(ctxT(t, 5*time.Second), term.Token().Key); err != nil {
			t.Fatal(err)
		}
		term = <-started
	}
	cancel()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	for _, en := range logs.All() {
		_, paused := en.ContextMap()["pause"]
		if paused || en.Message == "leader work failed; campaigning again" {
			t.Errorf("Run paused after a loss: %q %v", en.Message, en.ContextMap())
		}
	}
}

// TestRunPausesAfterFailingWork: work that fails while its term is current
// is not retried as fast as etcd allows: the pause before each campaign
// doubles.
func TestRunPausesAfterFailingWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lg, logs := hookLogger(func(zapcore.Entry) {})
	el := e.election(e.cli, election.WithLogger(lg))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int32
	err := el.Run(ctx, "r", election.Callbacks{Lead: func(context.Context, *election.Term) error {
		if n.Add(1) == 4 {
			cancel()
		}
		return errors.New("work failed")
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	requireDoublingPauses(t, logs)
	integration.RequireEmpty(t, e.cli, el.Prefix())
}

// TestCheckHealthyOnceWorkReturned: Run's context ends while etcd is
// unreachable; the work returns at once, and Check must say healthy from
// then on, though Run's resign waits for etcd for up to 5 s. Before, Check
// said the work still ran until the resign gave up.
func TestCheckHealthyOnceWorkReturned(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := integration.NewProxy(t, integration.Shared(t).Endpoint())
	cli := p.Client(t)
	defer p.Unpause()
	var resignFailed atomic.Bool
	lg, _ := hookLogger(func(en zapcore.Entry) {
		if strings.HasPrefix(en.Message, "resign failed") {
			resignFailed.Store(true)
		}
	})
	// A TTL long enough that the term is not lost (at its deadline, 8 s
	// after the last renewal) before the resign gives up (5 s).
	el := e.election(cli, election.WithTTL(10*time.Second), election.WithLogger(lg))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leading := make(chan *election.Term, 1)
	returned := make(chan struct{})
	runDone := goRun(ctx, el, "v", func(ctx context.Context, term *election.Term) error {
		leading <- term
		<-ctx.Done()
		close(returned)
		return nil
	})
	<-leading
	p.Pause() // requests wait, and go through at Unpause
	cancel()
	<-returned
	for el.Check(0) != nil && !resignFailed.Load() {
		time.Sleep(5 * time.Millisecond)
	}
	if resignFailed.Load() {
		t.Fatal("Check said the work still ran after it had returned, until the resign gave up")
	}
	p.Unpause()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}

// workOutlivesEnd runs el.Run with work that, once its context is
// cancelled, goes on until released; end ends Run (cancels its context, or
// closes the Election). While the work goes on, the term must stay the
// leader: the key is resigned only once the work has returned.
func workOutlivesEnd(t *testing.T, e *env, end func(el *election.Election, cancel context.CancelFunc) <-chan error, want error) {
	el := e.election(e.cli)
	standby := e.election(e.client())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leading := make(chan *election.Term, 1)
	stopping := make(chan struct{})
	release := make(chan struct{})
	runDone := goRun(ctx, el, "leader", func(ctx context.Context, term *election.Term) error {
		leading <- term
		<-ctx.Done()
		close(stopping)
		<-release // still writing, say
		return nil
	})
	term := <-leading
	next := make(chan campaign, 1)
	goCampaign(t, standby, "standby", next)
	waitKeys(t, e.cli, el.Prefix(), 2)
	ended := end(el, cancel)
	<-stopping
	// The work runs on: the term must still lead, and the standby wait.
	// Nothing would tell if they do not: give a wrong resign some time to
	// show.
	select {
	case c := <-next:
		t.Errorf("the standby led while the old leader's work ran: %v", c.err)
		next <- c
	case err := <-runDone:
		t.Errorf("Run returned %v while its work ran", err)
		runDone <- err
	case <-time.After(500 * time.Millisecond):
	}
	if keys := leaderKeys(t, e.cli, el); len(keys) == 0 || keys[0] != term.Token().Key {
		t.Errorf("while the leader's work runs, the keys are %v; want %s first", keys, term.Token().Key)
	}
	close(release)
	if err := <-runDone; !errors.Is(err, want) {
		t.Errorf("Run = %v, want %v", err, want)
	}
	if err := <-ended; err != nil {
		t.Errorf("end: %v", err)
	}
	mustResign(t, mustTerm(t, <-next))
}

// TestRunWaitsForWorkBeforeResigning: Run's context ends while the work
// goes on; the term is resigned only after the work returns.
func TestRunWaitsForWorkBeforeResigning(t *testing.T) {
	workOutlivesEnd(t, newEnv(t), func(_ *election.Election, cancel context.CancelFunc) <-chan error {
		cancel()
		ch := make(chan error, 1)
		ch <- nil
		return ch
	}, context.Canceled)
}

// TestCloseWaitsForRunWork: Close during Run ends Run first and waits for
// its work before resigning; before, Close resigned under running work.
func TestCloseWaitsForRunWork(t *testing.T) {
	workOutlivesEnd(t, newEnv(t), func(el *election.Election, _ context.CancelFunc) <-chan error {
		ch := make(chan error, 1)
		go func() { ch <- el.Close() }()
		return ch
	}, election.ErrClosed)
}

// TestNoHazardWhileTermCurrent: Run's context ends and the work takes
// longer than the lease's deadline at that moment to stop; the term stays
// this process's (the lease is renewed, and Run resigns only after the
// work), so no hazard may be logged.
func TestNoHazardWhileTermCurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var hazard atomic.Bool
	lg, _ := hookLogger(func(en zapcore.Entry) {
		if strings.HasPrefix(en.Message, "HAZARD") {
			hazard.Store(true)
		}
	})
	el := e.election(e.cli, election.WithTTL(2*time.Second), election.WithLogger(lg))
	ctx, cancel := context.WithCancel(context.Background())
	leading := make(chan *election.Term, 1)
	runDone := goRun(ctx, el, "v", func(ctx context.Context, term *election.Term) error {
		leading <- term
		<-ctx.Done()
		// A graceful stop that outlasts the deadline the lease had at
		// the cancel (the lease is renewed meanwhile).
		d := term.Deadline()
		time.Sleep(time.Until(d) + 300*time.Millisecond)
		if term.Err() != nil {
			t.Errorf("the term was lost while Run's work stopped: %v", term.Err())
		}
		return nil
	})
	<-leading
	cancel()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	if hazard.Load() {
		t.Fatal("HAZARD logged while the term was current")
	}
}

// TestLongTermResetsWorkPause: a term that lasted longer than 5 s resets
// the pause after failing work, also when it ended by a loss.
func TestLongTermResetsWorkPause(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lg, logs := hookLogger(func(zapcore.Entry) {})
	el := e.election(e.cli, election.WithLogger(lg))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int32
	long := make(chan *election.Term, 1)
	runDone := goRun(ctx, el, "r", func(ctx context.Context, term *election.Term) error {
		switch n.Add(1) {
		case 1, 2, 3:
			return errors.New("work failed")
		case 4:
			long <- term
			<-ctx.Done()
			return ctx.Err()
		case 5:
			return errors.New("work failed")
		default:
			cancel()
			return nil
		}
	})
	term := <-long
	time.Sleep(5500 * time.Millisecond) // a term longer than the longest pause
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), term.Token().Key); err != nil {
		t.Fatal(err)
	}
	<-runDone
	var pauses []any
	for _, en := range logs.FilterMessage("leader work failed; campaigning again").All() {
		pauses = append(pauses, en.ContextMap()["pause"])
	}
	if len(pauses) != 4 || pauses[3] != 50*time.Millisecond {
		t.Fatalf("pauses %v: after a term of more than 5s, want the pause reset to 50ms", pauses)
	}
}

// TestStuckWorkAfterCancelIsReported: work that ignores its context after
// Run's context ended keeps the term (no hazard: nobody else leads), but
// Check fails and a warning says leadership is held.
func TestStuckWorkAfterCancelIsReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	warned := make(chan struct{}, 1)
	lg, _ := hookLogger(func(en zapcore.Entry) {
		if strings.HasPrefix(en.Message, "leader work has not returned") {
			select {
			case warned <- struct{}{}:
			default:
			}
		}
	})
	el := e.election(e.cli, election.WithTTL(2*time.Second), election.WithLogger(lg))
	ctx, cancel := context.WithCancel(context.Background())
	leading := make(chan *election.Term, 1)
	release := make(chan struct{})
	runDone := goRun(ctx, el, "v", func(ctx context.Context, term *election.Term) error {
		leading <- term
		<-release // ignores ctx
		return nil
	})
	term := <-leading
	cancel()
	<-warned
	if err := el.Check(0); !errors.Is(err, election.ErrUnhealthy) {
		t.Errorf("Check with stuck work = %v, want ErrUnhealthy", err)
	}
	if term.Err() != nil {
		t.Errorf("the term ended while the work held it: %v", term.Err())
	}
	close(release)
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	if err := el.Check(0); err != nil {
		t.Errorf("Check after Run returned = %v", err)
	}
}

// TestRunPausesAfterWorkResigns: work that resigns its own term before it
// returns (a deferred Resign, say) gave the term up: it is paused after
// like work that returns with its term current, not taken for a loss.
// Before, Run campaigned again at once, and a lone candidate whose work
// failed at once took terms as fast as etcd allowed.
func TestRunPausesAfterWorkResigns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lg, logs := hookLogger(func(zapcore.Entry) {})
	el := e.election(e.cli, election.WithLogger(lg))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int32
	err := el.Run(ctx, "r", election.Callbacks{Lead: func(ctx context.Context, term *election.Term) error {
		defer func() {
			if err := term.Resign(ctxT(t, 5*time.Second)); err != nil {
				t.Errorf("Resign: %v", err)
			}
		}()
		if n.Add(1) == 4 {
			cancel()
		}
		return errors.New("work failed")
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if lost := logs.FilterMessage("leadership lost; campaigning again").Len(); lost != 0 {
		t.Errorf("a resign by the work was logged as a loss %d times", lost)
	}
	requireDoublingPauses(t, logs)
	integration.RequireEmpty(t, e.cli, el.Prefix())
}

// requireDoublingPauses fails t unless the pauses Run logged after failing
// work begin 50ms, 100ms, 200ms.
func requireDoublingPauses(t *testing.T, logs *observer.ObservedLogs) {
	t.Helper()
	var pauses []any
	for _, en := range logs.FilterMessage("leader work failed; campaigning again").All() {
		pauses = append(pauses, en.ContextMap()["pause"])
	}
	want := []any{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}
	if len(pauses) < len(want) {
		t.Fatalf("pauses %v, want %v first", pauses, want)
	}
	for i, p := range want {
		if pauses[i] != p {
			t.Fatalf("pauses %v, want %v first", pauses, want)
		}
	}
}

// TestRunTwiceAtOnce: a second Run on an Election while one runs returns
// ErrRunning at once, campaigning for nothing (before, it queued a second
// key behind the first Run's term, and Check followed only one of them);
// once the first has returned, Run works again.
func TestRunTwiceAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leading := make(chan struct{})
	first := goRun(ctx, el, "first", func(ctx context.Context, _ *election.Term) error {
		close(leading)
		<-ctx.Done()
		return nil
	})
	<-leading
	err := runPrompt(t, el, "second", election.Callbacks{Lead: mustNotLead(t)})
	if !errors.Is(err, election.ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	if keys := leaderKeys(t, e.cli, el); len(keys) != 1 {
		t.Fatalf("keys %v, want the first Run's only", keys)
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first Run = %v, want context.Canceled", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	err = el.Run(ctx2, "third", election.Callbacks{Lead: func(context.Context, *election.Term) error {
		cancel2()
		return nil
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after the first returned = %v, want context.Canceled after leading", err)
	}
}

// TestCheckNegativeTolerance: Check refuses a negative tolerance, which
// would call a healthy leader unhealthy (its deadline is in the future).
func TestCheckNegativeTolerance(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	if err := el.Check(-time.Second); !errors.Is(err, election.ErrInvalidOption) {
		t.Fatalf("Check(-1s) = %v, want ErrInvalidOption", err)
	}
	if err := el.Check(0); err != nil {
		t.Fatalf("Check(0) with no Run = %v, want nil", err)
	}
}
