package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/integration/embedded"
	"github.com/etcdlock/etcdlock/internal/bugs"
	"github.com/etcdlock/etcdlock/lock"
)

// Seeded bug names, the values of BugResult.Bug.
const (
	BugSkipOwnershipCheck  = "SkipOwnershipCheck"
	BugLeaseIDToken        = "LeaseIDToken"
	BugUnlockByName        = "UnlockByName"
	BugReceiveTimeDeadline = "ReceiveTimeDeadline"
)

// SeededBugsCompiled reports whether this build has the seeded bugs
// (build tag etcdlock_bugs); without them Run skips their scenarios and
// says so in Report.SeededBugsSkipped.
const SeededBugsCompiled = bugs.Compiled

// notCompiled is Report.SeededBugsSkipped in a build without the bugs.
const notCompiled = "planted bugs are not compiled in: build with -tags etcdlock_bugs to run their scenarios"

type seededBug struct {
	name     string
	bug      bugs.Bug
	scenario string
	run      func(context.Context, *scenario) error
}

var seededBugs = []seededBug{
	{BugSkipOwnershipCheck, bugs.SkipOwnershipCheck,
		"H holds; A and then W queue behind it; A gives up (its Lock's context ends), deleting the key W waits for. " +
			"W must keep waiting for H; with the bug W is granted while H holds, which checker (1) sees: " +
			"W's key was not admitted by the revision read after the grant, and two reported holds were alive at once. " +
			"The bug shows only if W read its blockers before A's key went, so the round is tried up to three times.",
		skipOwnershipScenario},
	{BugLeaseIDToken, bugs.LeaseIDToken,
		"Two holds in a row on one Mutex. With the bug the reported token is the lease ID, not the key's create " +
			"revision the watcher saw, which checker (1) reports.",
		leaseIDScenario},
	{BugUnlockByName, bugs.UnlockByName,
		"h1's Unlock times out behind a paused proxy, so its outcome is unknown; the key is then gone (the request " +
			"landed, or is made to have landed); h2 is granted on the same Mutex (same lease); h1's Unlock is retried. " +
			"With the bug h2 reuses h1's key name and the retry deletes h2's key by name; checker (1) sees a hold's " +
			"key deleted while its lease lived on (h3 is granted on it afterwards) and its owner had not unlocked.",
		unlockByNameScenario},
	{BugReceiveTimeDeadline, bugs.ReceiveTimeDeadline,
		"TTL 5s, safety margin 300ms. The holder's responses are delayed 1.5s by its proxies, then its requests are " +
			"dropped, so its lease expires at the server 5s after its last renewal reached it. The conservative " +
			"deadline (send time + TTL - margin) tells the holder before that; with the bug (receive time) the " +
			"holder is told only after the healthy watcher saw its key deleted, which checker (1) reports.",
		receiveTimeScenario},
}

// runSeededBugs runs each seeded bug's scenario without and with its switch.
// Without the bugs compiled in it runs none, and says so.
func (e *env) runSeededBugs(ctx context.Context) (out []BugResult, skipped string) {
	if !bugs.Compiled {
		e.lg.Warn(notCompiled)
		return nil, notCompiled
	}
	for _, b := range seededBugs {
		if ctx.Err() != nil {
			break
		}
		r := BugResult{Bug: b.name, Scenario: b.scenario}
		off, err := e.runScenario(ctx, b, false)
		r.CleanWithoutBug = err == nil && len(off) == 0
		var errs []string
		if err != nil {
			errs = append(errs, "without the bug: "+err.Error())
		}
		for _, f := range off {
			e.lg.Warn("seeded-bug scenario failed without its bug", zap.String("bug", b.name), zap.String("finding", f.What))
		}
		on, err := e.runScenario(ctx, b, true)
		if err != nil {
			errs = append(errs, "with the bug: "+err.Error())
		}
		r.verdict(on)
		if len(errs) > 0 {
			r.Err = fmt.Sprint(errs)
		}
		e.lg.Info("seeded bug", zap.String("bug", b.name), zap.Bool("caught", r.Caught), zap.Bool("clean without", r.CleanWithoutBug))
		out = append(out, r)
	}
	return out, ""
}

// verdict sets r's Caught, Checkers and Finding from the findings of the
// run with the bug on.
func (r *BugResult) verdict(on []Finding) {
	for _, f := range on {
		if !slices.Contains(r.Checkers, f.Checker) {
			r.Checkers = append(r.Checkers, f.Checker)
		}
		if f.Checker != CheckCleanup && !r.Caught {
			r.Caught, r.Finding = true, f.What
		}
	}
	if !r.Caught && len(on) > 0 {
		r.Finding = on[0].What
	}
}

// scenario is one run of a seeded bug's scenario: its own namespace,
// history and clean-up.
type scenario struct {
	e       *env
	ns      string
	hist    *History
	spec    lockSpec
	mu      sync.Mutex
	closers []func() error
}

func (e *env) runScenario(ctx context.Context, b seededBug, on bool) ([]Finding, error) {
	tag := "off"
	if on {
		tag = "on"
	}
	s := &scenario{e: e, ns: e.root + "bugs/" + b.name + "/" + tag + "/", hist: newHistory(e.start)}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var err error
	func() {
		if on {
			bugs.Set(b.bug, true)
			defer bugs.Set(b.bug, false)
		}
		err = b.run(sctx, s)
	}()
	fs, ferr := s.finish(ctx)
	return fs, errors.Join(err, ferr, s.close())
}

func (s *scenario) onClose(f func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, f)
}

func (s *scenario) close() error {
	s.mu.Lock()
	cs := s.closers
	s.closers = nil
	s.mu.Unlock()
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		if err := cs[i](); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// finish closes everything and runs checker (1) and the clean-up check. A
// watcher that cannot catch up is an error, not a finding: it says nothing
// of the library.
func (s *scenario) finish(ctx context.Context) ([]Finding, error) {
	_ = s.close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out []Finding
	if left := s.e.waitEmpty(ctx, s.ns, "", 3*s.e.cfg.TTL+6*time.Second); left != "" {
		out = append(out, Finding{CheckCleanup, "keys left: " + left})
	}
	if err := s.e.w.catchUp(ctx); err != nil {
		return out, fmt.Errorf("watcher: %w", err)
	}
	grants, _, _ := s.hist.snapshot()
	events := s.e.w.Events()
	gr := checkGrants(s.spec, replay(events, s.spec), grants, leaseUse(events))
	return append(out, gr.findings...), nil
}

// client returns a client of every member, through proxies if proxied.
func (s *scenario) client(proxied bool) (*clientv3.Client, []*embedded.Proxy, error) {
	if !proxied {
		cli, err := s.e.cluster.NewClient()
		if err != nil {
			return nil, nil, err
		}
		s.onClose(cli.Close)
		return cli, nil, nil
	}
	cli, ps, err := s.e.newClient()
	if err != nil {
		return nil, nil, err
	}
	s.onClose(func() error {
		errs := []error{cli.Close()}
		for _, p := range ps {
			errs = append(errs, p.Close())
		}
		return errors.Join(errs...)
	})
	return cli, ps, nil
}

func (s *scenario) mutex(cli *clientv3.Client, opts ...lock.Option) (*lock.Mutex, error) {
	opts = append([]lock.Option{lock.WithNamespace(s.ns), lock.WithTTL(2 * time.Second)}, opts...)
	m, err := lock.NewMutex(cli, "x", opts...)
	if err != nil {
		return nil, err
	}
	s.spec = lockSpec{prefix: m.Prefix(), kind: exclusive}
	s.onClose(m.Close)
	return m, nil
}

// lock locks m for worker and records the grant.
func (s *scenario) lock(ctx context.Context, m *lock.Mutex, worker string) (*lock.Hold, *Grant, error) {
	inv := s.hist.now()
	h, err := m.Lock(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: Lock: %w", worker, err)
	}
	return h, s.e.granted(s.hist, worker, lockHold{h}, inv, 1, true), nil
}

func (s *scenario) unlock(h *lock.Hold, g *Grant) { _ = release(s.hist, lockHold{h}, g) }

// waitKeys waits until n keys are under the scenario's lock.
func (s *scenario) waitKeys(ctx context.Context, n int64) error {
	for {
		resp, err := s.e.direct.Get(ctx, s.spec.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count >= n {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %d keys: %w", n, ctx.Err())
		}
		sleepCtx(ctx, 10*time.Millisecond)
	}
}

// waitFewer waits until fewer than n keys exist under the scenario's
// prefix.
func (s *scenario) waitFewer(ctx context.Context, n int64) error {
	for {
		resp, err := s.e.direct.Get(ctx, s.spec.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count < n {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for fewer than %d keys: %w", n, ctx.Err())
		}
		sleepCtx(ctx, 10*time.Millisecond)
	}
}

// waitGone waits until key is deleted (or has another create revision).
func (s *scenario) waitGone(ctx context.Context, key string, rev int64, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		resp, err := s.e.direct.Get(ctx, key)
		if err == nil && (len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != rev) {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
}

func skipOwnershipScenario(ctx context.Context, s *scenario) error {
	var ms [3]*lock.Mutex
	for i := range ms {
		cli, _, err := s.client(false)
		if err != nil {
			return err
		}
		if ms[i], err = s.mutex(cli); err != nil {
			return err
		}
	}
	// The bug shows only if W reads its blockers before A's key goes: a W
	// whose first read came later sees H alone ahead of it and waits as it
	// should. That race is why the round is tried up to three times, each
	// giving W longer to settle on its watch, until W is granted early.
	for round := 1; round <= 3; round++ {
		early, err := skipOwnershipRound(ctx, s, ms, round)
		if early || err != nil {
			return err
		}
	}
	return nil
}

// skipOwnershipRound is one round of skipOwnershipScenario. It reports
// whether W was granted while H still held.
func skipOwnershipRound(ctx context.Context, s *scenario, ms [3]*lock.Mutex, round int) (early bool, err error) {
	hH, gH, err := s.lock(ctx, ms[0], fmt.Sprint("H", round))
	if err != nil {
		return false, err
	}
	unlockH := sync.OnceFunc(func() { s.unlock(hH, gH) })
	defer unlockH()
	actx, giveUp := context.WithCancel(ctx)
	defer giveUp()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _, _ = ms[1].Lock(actx) }) // A
	if err := s.waitKeys(ctx, 2); err != nil {
		return false, err
	}
	type result struct {
		h   *lock.Hold
		g   *Grant
		err error
	}
	wres := make(chan result, 1)
	wg.Go(func() {
		h, g, err := s.lock(ctx, ms[2], fmt.Sprint("W", round))
		wres <- result{h, g, err}
	})
	if err := s.waitKeys(ctx, 3); err != nil {
		return false, err
	}
	sleepCtx(ctx, time.Duration(round)*200*time.Millisecond) // W reads and watches
	giveUp()                                                 // A's key, the one W waits for, goes (its lease keeper deletes it)
	// W's chance to be granted while H holds comes once that key is gone,
	// however long the deletion took on a loaded machine.
	if err := s.waitFewer(ctx, 3); err != nil {
		return false, err
	}
	var r result
	select {
	case r = <-wres:
		early = true
	case <-time.After(500 * time.Millisecond):
		unlockH()
		r = <-wres
	}
	if r.err != nil {
		return early, r.err
	}
	s.unlock(r.h, r.g)
	return early, nil
}

func leaseIDScenario(ctx context.Context, s *scenario) error {
	cli, _, err := s.client(false)
	if err != nil {
		return err
	}
	m, err := s.mutex(cli)
	if err != nil {
		return err
	}
	for _, w := range []string{"first", "second"} {
		h, g, err := s.lock(ctx, m, w)
		if err != nil {
			return err
		}
		s.unlock(h, g)
	}
	return nil
}

func unlockByNameScenario(ctx context.Context, s *scenario) error {
	cli, ps, err := s.client(true)
	if err != nil {
		return err
	}
	m, err := s.mutex(cli, lock.WithTTL(5*time.Second))
	if err != nil {
		return err
	}
	h1, g1, err := s.lock(ctx, m, "h1")
	if err != nil {
		return err
	}
	// First Unlock: held by the paused proxies until it times out.
	g1.UnlockAt = s.hist.now()
	var wg sync.WaitGroup
	wg.Go(func() { _ = embedded.PauseClient(ctx, 800*time.Millisecond, ps...) })
	sleepCtx(ctx, 50*time.Millisecond)
	uctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = h1.Unlock(uctx)
	cancel()
	wg.Wait()
	if err == nil {
		return errors.New("h1's first Unlock succeeded through paused proxies")
	}
	// Its outcome is unknown; let it have landed.
	tok := h1.Token()
	if !s.waitGone(ctx, tok.Key, g1.Token, 2*time.Second) {
		if _, err := s.e.direct.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(tok.Key), "=", g1.Token)).
			Then(clientv3.OpDelete(tok.Key)).Commit(); err != nil {
			return err
		}
	}
	h2, g2, err := s.lock(ctx, m, "h2")
	if err != nil {
		return err
	}
	// The retry of h1's Unlock.
	var retryErr error
	for range 20 {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		retryErr = h1.Unlock(rctx)
		cancel()
		if settled(retryErr) {
			break
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	if retryErr != nil {
		g1.UnlockErr = retryErr.Error()
	}
	// Let the watcher see whatever the retry did before h2 unlocks.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_ = s.e.w.catchUp(cctx)
	cancel()
	s.unlock(h2, g2)
	h3, g3, err := s.lock(ctx, m, "h3") // on the same lease, which lives on
	if err != nil {
		return err
	}
	s.unlock(h3, g3)
	return nil
}

func receiveTimeScenario(ctx context.Context, s *scenario) error {
	const (
		ttl    = 5 * time.Second
		margin = 300 * time.Millisecond
		delay  = 1500 * time.Millisecond
	)
	cli, ps, err := s.client(true)
	if err != nil {
		return err
	}
	m, err := s.mutex(cli, lock.WithTTL(ttl), lock.WithSafetyMargin(margin))
	if err != nil {
		return err
	}
	other, _, err := s.client(false)
	if err != nil {
		return err
	}
	mB, err := s.mutex(other, lock.WithTTL(ttl))
	if err != nil {
		return err
	}
	h, g, err := s.lock(ctx, m, "holder")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	type result struct {
		h   *lock.Hold
		g   *Grant
		err error
	}
	next := make(chan result, 1)
	wg.Go(func() {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		hb, gb, err := s.lock(lctx, mB, "next")
		next <- result{hb, gb, err}
	})
	fctx, stopFaults := context.WithCancel(ctx)
	wg.Go(func() { _ = embedded.DelayClientResponses(fctx, time.Minute, delay, ps...) })
	sleepCtx(ctx, 4*time.Second) // renewals answered late
	wg.Go(func() { _ = embedded.DropClientRequests(fctx, time.Minute, ps...) })
	tok := h.Token()
	gone := s.waitGone(ctx, tok.Key, g.Token, ttl+4*time.Second)
	select { // the holder is told at the latest when the delayed delete event arrives
	case <-h.Done():
	case <-time.After(2*delay + time.Second):
	}
	stopFaults()
	r := <-next
	wg.Wait()
	if r.err == nil {
		s.unlock(r.h, r.g)
	}
	s.unlock(h, g)
	if !gone {
		return errors.New("the holder's key was not deleted after its requests were dropped")
	}
	return r.err
}
