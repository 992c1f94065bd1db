package election_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/testutil"
)

func TestMain(m *testing.M) { integration.Main(m) }

// Helpers shared with lock's tests.
var (
	ctxT          = testutil.Ctx
	waitKeys      = testutil.WaitKeys
	newSession    = testutil.NewSession
	endedContexts = testutil.EndedContexts
)

type env struct {
	t   *testing.T
	cli *clientv3.Client
	ns  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cli, ns := testutil.Env(t)
	return &env{t: t, cli: cli, ns: ns}
}

func (e *env) client() *clientv3.Client { return testutil.Client(e.t) }

// election returns an Election closed at cleanup, with a 2s TTL unless a
// session is given.
func (e *env) election(cli *clientv3.Client, opts ...election.Option) *election.Election {
	e.t.Helper()
	base := []election.Option{election.WithNamespace(e.ns), election.WithLogger(zaptest.NewLogger(e.t))}
	if len(opts) == 0 {
		base = append(base, election.WithTTL(2*time.Second))
	}
	el, err := election.New(cli, "leader", append(base, opts...)...)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.t.Cleanup(func() {
		if err := el.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
	return el
}

func mustCampaign(t *testing.T, el *election.Election, v string) *election.Term {
	t.Helper()
	term, err := el.Campaign(ctxT(t, 10*time.Second), v)
	if err != nil {
		t.Fatalf("Campaign(%s): %v", v, err)
	}
	return term
}

// campaign is the outcome of a Campaign run on another goroutine.
type campaign struct {
	value string
	term  *election.Term
	err   error
}

// goCampaign campaigns for v on a new goroutine, which sends the outcome on
// ch (give it room for every campaign sent to it): the test goroutine checks
// it with mustTerm, since t.Fatal must not be called from other goroutines.
func goCampaign(t *testing.T, el *election.Election, v string, ch chan<- campaign) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	go func() {
		term, err := el.Campaign(ctx, v)
		ch <- campaign{value: v, term: term, err: err}
	}()
}

// mustTerm returns c's term, failing t if the campaign failed.
func mustTerm(t *testing.T, c campaign) *election.Term {
	t.Helper()
	if c.err != nil {
		t.Fatalf("Campaign(%s): %v", c.value, c.err)
	}
	return c.term
}

func mustResign(t *testing.T, term *election.Term) {
	t.Helper()
	if err := term.Resign(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("Resign: %v", err)
	}
}

func TestFIFOLeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.election(e.cli)
	ta := mustCampaign(t, a, "a")
	if !a.IsLeader() {
		t.Fatal("IsLeader false for the leader")
	}
	l, err := a.Leader(ctxT(t, 5*time.Second))
	if err != nil || l.Value != "a" || l.Token != ta.Token() {
		t.Fatalf("Leader = %v, %v", l, err)
	}
	got := make(chan campaign, 2)
	for i, v := range []string{"b", "c"} {
		goCampaign(t, e.election(e.client()), v, got)
		waitKeys(t, e.cli, a.Prefix(), int64(i+2))
	}
	mustResign(t, ta)
	if a.IsLeader() {
		t.Fatal("IsLeader true after Resign")
	}
	tb := mustTerm(t, <-got)
	if tb.Value() != "b" || tb.Token().Revision <= ta.Token().Revision {
		t.Fatalf("second leader %q %v", tb.Value(), tb.Token())
	}
	select {
	case <-got:
		t.Fatal("c leads while b does")
	default:
	}
	mustResign(t, tb)
	tc := mustTerm(t, <-got)
	if tc.Value() != "c" || tc.Token().Revision <= tb.Token().Revision {
		t.Fatalf("third leader %q %v", tc.Value(), tc.Token())
	}
	mustResign(t, tc)
	if _, err := a.Leader(ctxT(t, 5*time.Second)); !errors.Is(err, election.ErrNoLeader) {
		t.Fatalf("Leader with nobody = %v, want ErrNoLeader", err)
	}
}

func TestLeaderSessionRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	s := newSession(t, cli)
	a := e.election(cli, election.WithSession(s))
	ta := mustCampaign(t, a, "a")
	b := e.election(e.cli)
	got := make(chan campaign, 1)
	goCampaign(t, b, "b", got)
	waitKeys(t, e.cli, a.Prefix(), 2)
	if _, err := e.cli.Revoke(ctxT(t, 5*time.Second), s.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ta.Done():
	case <-time.After(2 * time.Second): // the TTL is 10s: only the watch is this quick
		t.Fatal("leader not told of revoke")
	}
	if !errors.Is(ta.Err(), election.ErrLost) {
		t.Fatalf("Err = %v", ta.Err())
	}
	tb := mustTerm(t, <-got)
	if tb.Token().Revision <= ta.Token().Revision {
		t.Fatalf("tokens %v then %v", ta.Token(), tb.Token())
	}
	if err := ta.Proclaim(ctxT(t, 5*time.Second), "zombie"); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("Proclaim after loss = %v, want ErrNotLeader", err)
	}
	l, err := b.Leader(ctxT(t, 5*time.Second))
	if err != nil || l.Value != "b" {
		t.Fatalf("Leader = %v %v, want b", l, err)
	}
	if err := ta.Resign(ctxT(t, 5*time.Second)); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("Resign after loss = %v, want ErrNotLeader", err)
	}
	mustResign(t, tb)
}

// TestNoPhantomLeadership: a candidate whose session ends while it waits
// must get an error, never a term (etcd's Campaign has no such check).
func TestNoPhantomLeadership(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.election(e.cli)
	ta := mustCampaign(t, a, "a")
	cli := e.client()
	s := newSession(t, cli)
	b := e.election(cli, election.WithSession(s))
	errc := make(chan error, 1)
	go func() {
		term, err := b.Campaign(context.Background(), "b")
		if term != nil {
			err = errors.New("phantom term granted")
		}
		errc <- err
	}()
	waitKeys(t, e.cli, a.Prefix(), 2)
	if _, err := e.cli.Revoke(ctxT(t, 5*time.Second), s.Lease()); err != nil {
		t.Fatal(err)
	}
	mustResign(t, ta) // b's turn would come now, had its key survived
	select {
	case err := <-errc:
		if !errors.Is(err, election.ErrSessionExpired) {
			t.Fatalf("Campaign = %v, want ErrSessionExpired", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Campaign did not return")
	}
}

// TestResignRetry: a Resign whose request failed can be retried (etcd's
// forgets its state on failure).
func TestResignRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)
	el := e.election(cli, election.WithTTL(10*time.Second))
	term := mustCampaign(t, el, "a")

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := term.Resign(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Resign with cancelled ctx = %v", err)
	}
	p.Pause()
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if err := term.Resign(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Resign through a paused proxy = %v", err)
	}
	p.Unpause()
	if err := term.Resign(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("retried Resign = %v", err)
	}
	if _, err := el.Leader(ctxT(t, 5*time.Second)); !errors.Is(err, election.ErrNoLeader) {
		t.Fatalf("Leader after Resign = %v", err)
	}
	if err := term.Resign(ctxT(t, 5*time.Second)); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("Resign again = %v, want ErrNotLeader", err)
	}
}

func TestProclaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	term := mustCampaign(t, el, "v1")
	if err := term.Proclaim(ctxT(t, 5*time.Second), "v2"); err != nil {
		t.Fatal(err)
	}
	l, err := el.Leader(ctxT(t, 5*time.Second))
	if err != nil || l.Value != "v2" || l.Token != term.Token() {
		t.Fatalf("Leader = %v %v", l, err)
	}
	// An empty value is published as it is.
	if err := term.Proclaim(ctxT(t, 5*time.Second), ""); err != nil {
		t.Fatal(err)
	}
	if l, err := el.Leader(ctxT(t, 5*time.Second)); err != nil || l.Value != "" || term.Value() != "" {
		t.Fatalf("after Proclaim(\"\"): Leader = %v %v, Value %q", l, err, term.Value())
	}
	// Someone deletes the key: the term is lost and Proclaim is fenced,
	// even before the loss is seen.
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), term.Token().Key); err != nil {
		t.Fatal(err)
	}
	if err := term.Proclaim(ctxT(t, 5*time.Second), "v3"); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("Proclaim after delete = %v", err)
	}
	<-term.Done()
	if err := term.Resign(ctxT(t, 5*time.Second)); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("Resign = %v", err)
	}
}

// Concurrent Proclaims answer in any order; Value must end as the value
// etcd kept (the last written), not the last answered.
func TestConcurrentProclaimsValue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	term := mustCampaign(t, el, "v")
	for round := range 20 {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				if err := term.Proclaim(ctxT(t, 5*time.Second), fmt.Sprintf("r%d-%d", round, i)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		l, err := el.Leader(ctxT(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got := term.Value(); got != l.Value {
			t.Fatalf("round %d: Value() = %q, etcd has %q", round, got, l.Value)
		}
	}
	if err := term.Resign(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestObserve(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	obs := e.election(e.cli)
	ctx, cancel := context.WithCancel(context.Background())
	ch := obs.Observe(ctx)
	next := func() election.Leader {
		t.Helper()
		select {
		case l := <-ch:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no Observe event")
			return election.Leader{}
		}
	}
	if l := next(); !l.IsZero() {
		t.Fatalf("first event %v, want no leader", l)
	}
	a := e.election(e.client())
	ta := mustCampaign(t, a, "a")
	if l := next(); l.Value != "a" || l.Token != ta.Token() {
		t.Fatalf("event %v, want a", l)
	}
	// A waiting candidate is never reported as leader.
	b := e.election(e.client())
	got := make(chan campaign, 1)
	goCampaign(t, b, "b", got)
	waitKeys(t, e.cli, a.Prefix(), 2)
	mustResign(t, ta)
	if l := next(); l.Value != "b" {
		t.Fatalf("event %v, want b", l)
	}
	tb := mustTerm(t, <-got)
	mustResign(t, tb)
	if l := next(); !l.IsZero() {
		t.Fatalf("event %v, want no leader", l)
	}
	// Compact the whole history; Observe must go on.
	rev, err := e.cli.Get(ctxT(t, 5*time.Second), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Compact(ctxT(t, 5*time.Second), rev.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	tc := mustCampaign(t, a, "c")
	if l := next(); l.Value != "c" || l.Token.Revision <= tb.Token().Revision {
		t.Fatalf("event %v after compaction, want c", l)
	}
	if err := tc.Proclaim(ctxT(t, 5*time.Second), "c2"); err != nil {
		t.Fatal(err)
	}
	if l := next(); l.Value != "c2" || l.Token != tc.Token() {
		t.Fatalf("event %v, want c2", l)
	}
	mustResign(t, tc)
	if l := next(); !l.IsZero() {
		t.Fatalf("event %v, want no leader", l)
	}
	cancel()
	for range ch { // closed once ctx ends
	}
}

func TestRunCancelsWorkOnLossAndRecampaigns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	el := e.election(cli)
	var (
		mu     sync.Mutex
		terms  []int64
		causes []error
	)
	started := make(chan *election.Term, 4)
	stopped := make(chan error, 4)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	var working atomic.Bool
	go func() {
		runDone <- el.Run(ctx, "r", election.Callbacks{
			Lead: func(ctx context.Context, term *election.Term) error {
				working.Store(true)
				mu.Lock()
				terms = append(terms, term.Token().Revision)
				mu.Unlock()
				started <- term
				<-ctx.Done()
				mu.Lock()
				causes = append(causes, context.Cause(ctx))
				mu.Unlock()
				time.Sleep(50 * time.Millisecond) // some cleanup after cancel
				working.Store(false)
				return nil
			},
			OnStoppedLeading: func(term *election.Term, err error) {
				if working.Load() {
					t.Error("OnStoppedLeading before Lead returned")
				}
				stopped <- err
			},
		})
	}()
	t1 := <-started
	// Depose the leader: delete its key.
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), t1.Token().Key); err != nil {
		t.Fatal(err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	t2 := <-started // re-campaigned and leads again
	if t2.Token().Revision <= t1.Token().Revision {
		t.Fatalf("terms %v then %v", t1.Token(), t2.Token())
	}
	cancel()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if working.Load() {
		t.Fatal("Run returned while leader work was running")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(causes) != 2 || !errors.Is(causes[0], election.ErrLost) || !errors.Is(causes[1], context.Canceled) {
		t.Fatalf("causes %v", causes)
	}
}

// TestRunHandsOver: two Run loops; stopping the leader's hands over at once
// (it resigns), and terms never overlap.
func TestRunHandsOver(t *testing.T) {
	e := newEnv(t)
	// A TTL long enough that b can only lead before it runs out if a's key
	// went by its resign, not by its lease expiring.
	const ttl = 30 * time.Second
	type lead struct {
		name string
		term *election.Term
	}
	var (
		inside atomic.Int32
		mu     sync.Mutex
		last   int64
		leads  = make(chan lead, 16)
	)
	leader := func(name string) func(context.Context, *election.Term) error {
		return func(ctx context.Context, term *election.Term) error {
			if n := inside.Add(1); n != 1 {
				t.Errorf("%d leaders at once", n)
			}
			mu.Lock()
			if term.Token().Revision <= last {
				t.Errorf("term %d not above %d", term.Token().Revision, last)
			}
			last = term.Token().Revision
			mu.Unlock()
			leads <- lead{name, term}
			<-ctx.Done()
			inside.Add(-1)
			return nil
		}
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	a := e.election(e.client(), election.WithTTL(ttl))
	b := e.election(e.client(), election.WithTTL(ttl))
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.Run(ctxA, "a", election.Callbacks{Lead: leader("a")}) })
	first := <-leads
	if first.name != "a" {
		t.Fatalf("first leader %s", first.name)
	}
	wg.Go(func() { _ = b.Run(ctxB, "b", election.Callbacks{Lead: leader("b")}) })
	waitKeys(t, e.cli, a.Prefix(), 2)
	start := time.Now()
	cancelA()
	select {
	case second := <-leads:
		if second.name != "b" {
			t.Fatalf("second leader %s", second.name)
		}
	case <-time.After(ttl / 2):
		t.Fatalf("b not leading %v after a's Run ended (TTL %v): a did not resign", ttl/2, ttl)
	}
	t.Logf("handover took %v", time.Since(start))
	// a's lease is still alive (the Election renews it until Close): b
	// leads because a's Run deleted its key, not because its lease expired.
	ttlResp, err := e.cli.TimeToLive(ctxT(t, 5*time.Second), first.term.Lease())
	if err != nil {
		t.Fatal(err)
	}
	if ttlResp.TTL <= 0 {
		t.Errorf("a's lease expired (TTL %d): the handover did not come from a's resign", ttlResp.TTL)
	}
	cancelB()
	wg.Wait()
}

func TestFencedWriteByDeposedLeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	term := mustCampaign(t, el, "a")
	data := e.ns + "data"
	ctx := ctxT(t, 5*time.Second)
	if _, err := fencing.Commit(ctx, e.cli, term.Token(), clientv3.OpPut(data, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Delete(ctx, term.Token().Key); err != nil {
		t.Fatal(err)
	}
	t2 := mustCampaign(t, e.election(e.client()), "b")
	if _, err := fencing.Commit(ctx, e.cli, term.Token(), clientv3.OpPut(data, "deposed")); !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("deposed leader's write = %v, want ErrFenced", err)
	}
	if _, err := fencing.Commit(ctx, e.cli, t2.Token(), clientv3.OpPut(data, "b")); err != nil {
		t.Fatal(err)
	}
	resp, err := e.cli.Get(ctx, data)
	if err != nil || string(resp.Kvs[0].Value) != "b" {
		t.Fatalf("data = %v %v", resp, err)
	}
	mustResign(t, t2)
	if _, err := e.cli.Delete(ctx, data); err != nil {
		t.Fatal(err)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := election.New(nil, "x"); !errors.Is(err, election.ErrNilClient) {
		t.Fatalf("nil client: %v", err)
	}
	if _, err := election.New(e.cli, ""); !errors.Is(err, election.ErrInvalidName) {
		t.Fatalf("empty name: %v", err)
	}
	if _, err := election.New(e.cli, "x", election.WithTTL(time.Millisecond)); !errors.Is(err, election.ErrInvalidOption) {
		t.Fatalf("bad TTL: %v", err)
	}
	el := e.election(e.cli)
	if _, err := el.Campaign(ctxT(t, time.Second), string(make([]byte, election.MaxValueLen+1))); !errors.Is(err, election.ErrInvalidValue) {
		t.Fatalf("long value: %v", err)
	}
	if err := el.Run(context.Background(), "v", election.Callbacks{}); err == nil {
		t.Fatal("Run without Lead")
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := el.Campaign(cancelled, "v"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Campaign: %v", err)
	}
	if err := el.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := el.Campaign(ctxT(t, time.Second), "v"); !errors.Is(err, election.ErrClosed) {
		t.Fatalf("Campaign after Close: %v", err)
	}
}
