package lock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap/zaptest"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/lock"
)

// rwmutex returns an RWMutex closed at cleanup, with a 2s TTL unless the
// options give a session.
func (e *env) rwmutex(cli *clientv3.Client, name string, opts ...lock.Option) *lock.RWMutex {
	e.t.Helper()
	base := []lock.Option{lock.WithNamespace(e.ns), lock.WithLogger(zaptest.NewLogger(e.t))}
	if len(opts) == 0 {
		base = append(base, lock.WithTTL(2*time.Second))
	}
	m, err := lock.NewRWMutex(cli, name, append(base, opts...)...)
	if err != nil {
		e.t.Fatalf("NewRWMutex: %v", err)
	}
	e.t.Cleanup(func() {
		if err := m.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
	return m
}

// countingClient returns a new client whose KV requests are counted, to
// check how many round trips a waiter makes.
func (e *env) countingClient() (*clientv3.Client, *countingKV) {
	cli := e.client()
	c := &countingKV{KV: cli.KV}
	cli.KV = c
	return cli, c
}

type countingKV struct {
	clientv3.KV
	n atomic.Int64
}

func (c *countingKV) Txn(ctx context.Context) clientv3.Txn {
	c.n.Add(1)
	return c.KV.Txn(ctx)
}

func (c *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.n.Add(1)
	return c.KV.Get(ctx, key, opts...)
}

func (c *countingKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	c.n.Add(1)
	return c.KV.Do(ctx, op)
}

// pendingHold is an acquire running in its own goroutine.
type pendingHold struct {
	done chan struct{}
	h    *lock.Hold
	err  error
}

func goAcquire(f func() (*lock.Hold, error)) *pendingHold {
	p := &pendingHold{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.h, p.err = f()
	}()
	return p
}

// stillWaiting fails t if p already returned.
func stillWaiting(t *testing.T, p *pendingHold, what string) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("%s returned while it should wait: %v, %v", what, p.h, p.err)
	default:
	}
}

// grantedHold waits for p and returns its hold, failing t on error.
func grantedHold(t *testing.T, p *pendingHold, what string) *lock.Hold {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not granted within 10s", what)
	}
	if p.err != nil {
		t.Fatalf("%s: %v", what, p.err)
	}
	return p.h
}

// failedAcquire waits for p and returns its error, failing t if it was granted.
func failedAcquire(t *testing.T, p *pendingHold, what string) error {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: did not return within 10s", what)
	}
	if p.err == nil {
		t.Fatalf("%s: granted, want an error", what)
	}
	return p.err
}

func mustRLock(t *testing.T, m *lock.RWMutex) *lock.Hold {
	t.Helper()
	h, err := m.RLock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("RLock: %v", err)
	}
	return h
}

func mustWLock(t *testing.T, m *lock.RWMutex) *lock.Hold {
	t.Helper()
	h, err := m.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	return h
}

func newTestSession(t *testing.T, cli *clientv3.Client) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() }) // a revoked session's Close fails
	return s
}

// revokeSession revokes s's lease. It may run outside the test's goroutine.
func revokeSession(t *testing.T, cli *clientv3.Client, s *concurrency.Session) {
	t.Helper()
	if _, err := cli.Revoke(ctxT(t, 5*time.Second), s.Lease()); err != nil {
		t.Errorf("Revoke: %v", err)
	}
}

func TestRWWriterWaitsForReadersAhead(t *testing.T) {
	e := newEnv(t)
	m := e.rwmutex(e.cli, "wr")
	r1, r2 := mustRLock(t, m), mustRLock(t, m) // readers share
	wm := e.rwmutex(e.client(), "wr")
	w := goAcquire(func() (*lock.Hold, error) { return wm.Lock(ctxT(t, 30*time.Second)) })
	waitKeys(t, e.cli, m.Prefix(), 3)
	stillWaiting(t, w, "writer behind two readers")
	// Writer-fair: a reader asking after the writer does not overtake it.
	if _, err := m.TryRLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryRLock behind a queued writer = %v, want ErrLocked", err)
	}
	if _, err := m.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock with readers in = %v, want ErrLocked", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 3) // the failed tries left nothing
	mustUnlock(t, r2)
	stillWaiting(t, w, "writer behind one reader")
	mustUnlock(t, r1)
	wh := grantedHold(t, w, "writer")
	if !wh.Token().Newer(r1.Token()) || !wh.Token().Newer(r2.Token()) {
		t.Fatalf("writer token %v not above readers' %v, %v", wh.Token(), r1.Token(), r2.Token())
	}
	mustUnlock(t, wh)
}

func TestRWReaderWaitsForWriterAhead(t *testing.T) {
	e := newEnv(t)
	m := e.rwmutex(e.cli, "rw")
	w := mustWLock(t, m)
	rm := e.rwmutex(e.client(), "rw")
	r := goAcquire(func() (*lock.Hold, error) { return rm.RLock(ctxT(t, 30*time.Second)) })
	waitKeys(t, e.cli, m.Prefix(), 2)
	stillWaiting(t, r, "reader behind a writer")
	if _, err := rm.TryRLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryRLock while a writer holds = %v, want ErrLocked", err)
	}
	mustUnlock(t, w)
	rh := grantedHold(t, r, "reader")
	if !rh.Token().Newer(w.Token()) {
		t.Fatalf("reader token %v not above writer's %v", rh.Token(), w.Token())
	}
	// A reader holds, nobody queued: more readers get in at once.
	r2, err := m.TryRLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("TryRLock beside a reader: %v", err)
	}
	mustUnlock(t, rh)
	mustUnlock(t, r2)
}

// TestRWReadersBehindWriterHoldTogether queues r0 (holding), w1, five
// readers, w2 and r6. When w1 unlocks, the five readers must all hold at
// once, while w2 and r6 keep waiting. Each of the five makes at most four
// round trips in all: the enqueue, possibly one read after opening its
// watches, one read when w1's delete wakes it, and a spare for a
// serializable read that found the member behind the watch. A waiter that
// re-read on every change of the queue would make at least eight.
func TestRWReadersBehindWriterHoldTogether(t *testing.T) {
	e := newEnv(t)
	m := e.rwmutex(e.cli, "together")
	ctx := ctxT(t, 30*time.Second)
	r0 := mustRLock(t, m)
	w1 := goAcquire(func() (*lock.Hold, error) { return m.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 2)
	const n = 5
	var (
		readers [n]*pendingHold
		counts  [n]*countingKV
	)
	for i := range n {
		cli, c := e.countingClient()
		rm := e.rwmutex(cli, "together")
		counts[i] = c
		readers[i] = goAcquire(func() (*lock.Hold, error) { return rm.RLock(ctx) })
		waitKeys(t, e.cli, m.Prefix(), int64(3+i))
	}
	w2 := goAcquire(func() (*lock.Hold, error) { return m.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 3+n)
	r6 := goAcquire(func() (*lock.Hold, error) { return m.RLock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 4+n)

	stillWaiting(t, w1, "w1")
	mustUnlock(t, r0)
	w1h := grantedHold(t, w1, "w1")
	for i, r := range readers {
		stillWaiting(t, r, fmt.Sprintf("reader %d while w1 holds", i))
	}
	mustUnlock(t, w1h)
	var holds [n]*lock.Hold
	for i, r := range readers {
		holds[i] = grantedHold(t, r, fmt.Sprintf("reader %d", i))
	}
	for i, h := range holds { // all granted, none unlocked: they hold together
		if h.Err() != nil {
			t.Fatalf("reader %d: %v", i, h.Err())
		}
		if !h.Token().Newer(w1h.Token()) {
			t.Fatalf("reader %d token %v not above w1's %v", i, h.Token(), w1h.Token())
		}
		if c := counts[i].n.Load(); c > 4 {
			t.Errorf("reader %d made %d round trips, want at most 4", i, c)
		}
	}
	stillWaiting(t, w2, "w2 while readers hold")
	stillWaiting(t, r6, "r6 behind w2")
	for _, h := range holds {
		mustUnlock(t, h)
	}
	w2h := grantedHold(t, w2, "w2")
	stillWaiting(t, r6, "r6 while w2 holds")
	mustUnlock(t, w2h)
	mustUnlock(t, grantedHold(t, r6, "r6"))
}

// TestRWNeverWriterWithOthers runs 16 workers on two clients, 50 rounds each
// of a random RLock, Lock, TryRLock or TryLock, and checks that a writer
// always holds alone and that tokens rise as RWMutex documents: a writer's
// above every token before it, a reader's above every writer's before it.
// An RWFence must admit every access.
func TestRWNeverWriterWithOthers(t *testing.T) {
	e := newEnv(t)
	const workers, rounds = 16, 50
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	var (
		readers, writers atomic.Int32
		maxReaders       atomic.Int32
		fence            fencing.RWFence
		mu               sync.Mutex
		maxAll, maxWrite int64
		wg               sync.WaitGroup
	)
	other := e.client()
	for i := range workers {
		cli := e.cli
		if i%2 == 1 {
			cli = other
		}
		m := e.rwmutex(cli, "mx")
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() {
			for range rounds {
				write, try := rng.IntN(3) == 0, rng.IntN(4) == 0
				ctx := ctxT(t, 60*time.Second)
				var (
					h   *lock.Hold
					err error
				)
				switch {
				case write && try:
					h, err = m.TryLock(ctx)
				case write:
					h, err = m.Lock(ctx)
				case try:
					h, err = m.TryRLock(ctx)
				default:
					h, err = m.RLock(ctx)
				}
				if try && errors.Is(err, lock.ErrLocked) {
					continue
				}
				if err != nil {
					t.Errorf("acquire (write %v): %v", write, err)
					return
				}
				tok := h.Token()
				if write {
					if n := writers.Add(1); n != 1 {
						t.Errorf("%d writers at once", n)
					}
					if n := readers.Load(); n != 0 {
						t.Errorf("writer with %d readers", n)
					}
					if err := fence.AdmitWrite("res", tok); err != nil {
						t.Errorf("fence refused a current writer: %v", err)
					}
					mu.Lock()
					if tok.Revision <= maxAll {
						t.Errorf("writer token %d not above %d", tok.Revision, maxAll)
					}
					maxAll, maxWrite = tok.Revision, tok.Revision
					mu.Unlock()
					writers.Add(-1)
				} else {
					n := readers.Add(1)
					for old := maxReaders.Load(); n > old && !maxReaders.CompareAndSwap(old, n); old = maxReaders.Load() {
					}
					time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond) // a read
					if n := writers.Load(); n != 0 {
						t.Errorf("reader with %d writers", n)
					}
					if err := fence.AdmitRead("res", tok); err != nil {
						t.Errorf("fence refused a current reader: %v", err)
					}
					mu.Lock()
					if tok.Revision <= maxWrite {
						t.Errorf("reader token %d not above writer token %d", tok.Revision, maxWrite)
					}
					maxAll = max(maxAll, tok.Revision)
					mu.Unlock()
					readers.Add(-1)
				}
				if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
					t.Errorf("Unlock: %v", err)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("at most %d readers held at once", maxReaders.Load())
}

func TestRWTryLeavesNoKeys(t *testing.T) {
	e := newEnv(t)
	m := e.rwmutex(e.cli, "try")
	ctx := ctxT(t, 10*time.Second)
	r1, err := m.TryRLock(ctx)
	if err != nil {
		t.Fatalf("TryRLock on free lock: %v", err)
	}
	r2, err := m.TryRLock(ctx)
	if err != nil {
		t.Fatalf("TryRLock beside a reader: %v", err)
	}
	if _, err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock with readers = %v, want ErrLocked", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 2)
	mustUnlock(t, r1)
	mustUnlock(t, r2)
	w, err := m.TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock on free lock: %v", err)
	}
	if _, err := m.TryRLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryRLock with a writer = %v, want ErrLocked", err)
	}
	if _, err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock with a writer = %v, want ErrLocked", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 1)
	mustUnlock(t, w)
}

func TestRWCancelAndTimeoutLeaveNoKeys(t *testing.T) {
	e := newEnv(t)
	m := e.rwmutex(e.cli, "c")
	w := e.rwmutex(e.client(), "c")

	// A reader times out behind a writer, a writer behind a reader.
	wh := mustWLock(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := w.RLock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RLock with timeout = %v, want DeadlineExceeded", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 1)
	mustUnlock(t, wh)
	r0 := mustRLock(t, m)
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := w.Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with timeout = %v, want DeadlineExceeded", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 1)

	// A cancelled writer between readers lets the reader behind it in.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	pw := goAcquire(func() (*lock.Hold, error) { return w.Lock(wctx) })
	waitKeys(t, e.cli, m.Prefix(), 2)
	pr := goAcquire(func() (*lock.Hold, error) { return w.RLock(ctxT(t, 30*time.Second)) })
	waitKeys(t, e.cli, m.Prefix(), 3)
	stillWaiting(t, pr, "reader behind a waiting writer")
	wcancel()
	if err := failedAcquire(t, pw, "cancelled writer"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Lock = %v, want Canceled", err)
	}
	r1 := grantedHold(t, pr, "reader behind the cancelled writer")
	waitKeys(t, e.cli, m.Prefix(), 2)
	mustUnlock(t, r0)
	mustUnlock(t, r1)

	// An already-cancelled context does nothing at all.
	if _, err := w.RLock(wctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("RLock with cancelled ctx = %v", err)
	}
	if _, err := w.Lock(wctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with cancelled ctx = %v", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 0)
}

// TestRWWaiterSessionRevoked is etcd #16221: w1 holds, w2 waits on a session
// that is revoked, w3 and a reader wait behind w2. w2 must fail, and w3 and
// the reader must go on waiting for w1, then hold in turn.
func TestRWWaiterSessionRevoked(t *testing.T) {
	e := newEnv(t)
	m := e.rwmutex(e.cli, "ws")
	w1 := mustWLock(t, m)
	cli := e.client()
	s := newTestSession(t, cli)
	sm := e.rwmutex(cli, "ws", lock.WithSession(s))
	ctx := ctxT(t, 30*time.Second)
	w2 := goAcquire(func() (*lock.Hold, error) { return sm.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 2)
	w3 := goAcquire(func() (*lock.Hold, error) { return m.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 3)
	r := goAcquire(func() (*lock.Hold, error) { return m.RLock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 4)
	rs := goAcquire(func() (*lock.Hold, error) { return sm.RLock(ctx) }) // a reader on the same session
	waitKeys(t, e.cli, m.Prefix(), 5)

	revokeSession(t, e.cli, s)
	if err := failedAcquire(t, w2, "w2"); !errors.Is(err, lock.ErrSessionExpired) {
		t.Fatalf("w2 after revoke = %v, want ErrSessionExpired", err)
	}
	if err := failedAcquire(t, rs, "reader on the revoked session"); !errors.Is(err, lock.ErrSessionExpired) {
		t.Fatalf("reader after revoke = %v, want ErrSessionExpired", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 3)
	// w3 and r were woken by w2's delete; give a wrongly admitted waiter a
	// moment to show itself.
	select {
	case <-w3.done:
		t.Fatalf("w3 granted while w1 holds: %v %v", w3.h, w3.err)
	case <-r.done:
		t.Fatalf("reader granted while w1 holds: %v %v", r.h, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	mustUnlock(t, w1)
	w3h := grantedHold(t, w3, "w3")
	stillWaiting(t, r, "reader while w3 holds")
	mustUnlock(t, w3h)
	mustUnlock(t, grantedHold(t, r, "reader"))
}

// TestRWHolderSessionRevoked revokes a writer's session while readers wait,
// then a reader's while a writer waits: the hold is reported lost, the
// waiters are granted with higher tokens, the lost hold's Unlock says so,
// and an RWFence refuses the stale holder.
func TestRWHolderSessionRevoked(t *testing.T) {
	e := newEnv(t)
	cli := e.client()
	m := e.rwmutex(e.cli, "hs")
	ctx := ctxT(t, 30*time.Second)
	var fence fencing.RWFence

	s := newTestSession(t, cli)
	sm := e.rwmutex(cli, "hs", lock.WithSession(s))
	w := mustWLock(t, sm)
	if err := fence.AdmitWrite("res", w.Token()); err != nil {
		t.Fatal(err)
	}
	r1 := goAcquire(func() (*lock.Hold, error) { return m.RLock(ctx) })
	r2 := goAcquire(func() (*lock.Hold, error) { return m.RLock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 3)
	revokeSession(t, e.cli, s)
	waitClosed(t, w.Done(), 2*time.Second, "writer's Done after revoke")
	if !errors.Is(w.Err(), lock.ErrLost) {
		t.Fatalf("writer Err = %v, want ErrLost", w.Err())
	}
	h1, h2 := grantedHold(t, r1, "r1"), grantedHold(t, r2, "r2")
	for _, h := range []*lock.Hold{h1, h2} {
		if !h.Token().Newer(w.Token()) {
			t.Fatalf("reader token %v not above lost writer's %v", h.Token(), w.Token())
		}
		if err := fence.AdmitRead("res", h.Token()); err != nil {
			t.Fatalf("fence refused a current reader: %v", err)
		}
	}
	if err := w.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) || !errors.Is(err, lock.ErrLost) {
		t.Fatalf("Unlock of lost writer = %v, want ErrNotHeld wrapping ErrLost", err)
	}
	if err := fence.AdmitWrite("res", w.Token()); !errors.Is(err, fencing.ErrStale) {
		t.Fatalf("fence admitted the stale writer after newer readers: %v", err)
	}
	mustUnlock(t, h1)

	// Now a reader's session is revoked while a writer waits behind it.
	s2 := newTestSession(t, cli)
	sm2 := e.rwmutex(cli, "hs", lock.WithSession(s2))
	r3 := mustRLock(t, sm2)
	mustUnlock(t, h2)
	pw := goAcquire(func() (*lock.Hold, error) { return m.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 2)
	stillWaiting(t, pw, "writer behind a reader")
	revokeSession(t, e.cli, s2)
	wh := grantedHold(t, pw, "writer after the reader's session ended")
	waitClosed(t, r3.Done(), 2*time.Second, "reader's Done after revoke")
	if err := fence.AdmitWrite("res", wh.Token()); err != nil {
		t.Fatalf("fence refused a current writer: %v", err)
	}
	if err := fence.AdmitRead("res", r3.Token()); !errors.Is(err, fencing.ErrStale) {
		t.Fatalf("fence admitted a stale reader after a newer writer: %v", err)
	}
	if err := r3.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("Unlock of lost reader = %v, want ErrNotHeld", err)
	}
	mustUnlock(t, wh)
}

// TestRWRevokedAtRandomPoints runs workers that each take read or write
// holds on their own session and, at random, have the session revoked while
// they wait or while they hold. Whenever a hold is granted, no conflicting
// hold whose owner still believes it holds may have its key: never two
// writers, never a writer with a reader. A waiter whose session is revoked
// gets ErrSessionExpired (or, if it was granted first, sees its hold lost),
// and no key is left behind.
func TestRWRevokedAtRandomPoints(t *testing.T) {
	e := newEnv(t)
	const workers, rounds = 8, 20
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	var (
		mu     sync.Mutex
		active = make(map[*lock.Hold]bool) // hold -> write
		stats  struct{ midWait, holding, grantedFirst atomic.Int32 }
		wg     sync.WaitGroup
	)
	// enter records h as held and checks it against the other holds.
	enter := func(h *lock.Hold, write bool) {
		mu.Lock()
		defer mu.Unlock()
		for o, ow := range active {
			if (!write && !ow) || o.Err() != nil {
				continue
			}
			// o's owner has not seen a loss yet; that is allowed only if
			// its key is already gone (the loss is on its way).
			resp, err := e.cli.Get(ctxT(t, 5*time.Second), o.Token().Key)
			if err != nil {
				t.Errorf("Get: %v", err)
				continue
			}
			if len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == o.Token().Revision {
				t.Errorf("hold %v (write %v) granted while %v (write %v) holds", h.Token(), write, o.Token(), ow)
			}
		}
		active[h] = write
	}
	leave := func(h *lock.Hold) {
		mu.Lock()
		delete(active, h)
		mu.Unlock()
	}
	cli := e.client()
	for i := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() {
			s := newTestSession(t, cli)
			m := e.rwmutex(cli, "chaos", lock.WithSession(s))
			mb := e.rwmutex(e.cli, "chaos") // never revoked
			renew := func() {
				_ = m.Close()
				_ = s.Close()
				s = newTestSession(t, cli)
				m = e.rwmutex(cli, "chaos", lock.WithSession(s))
			}
			for range rounds {
				write := rng.IntN(2) == 0
				fate := rng.IntN(10)
				ctx := ctxT(t, 30*time.Second)
				var blocker *lock.Hold
				if fate < 3 {
					// Hold the lock for writing first, so that the waiter
					// about to be revoked really waits.
					var err error
					if blocker, err = mb.Lock(ctx); err != nil {
						t.Errorf("Lock: %v", err)
						return
					}
					enter(blocker, true)
				}
				p := goAcquire(func() (*lock.Hold, error) {
					var h *lock.Hold
					var err error
					if write {
						h, err = m.Lock(ctx)
					} else {
						h, err = m.RLock(ctx)
					}
					if err == nil {
						enter(h, write)
					}
					return h, err
				})
				switch {
				case fate < 3: // revoke mid-wait, at a random point
					waitLeaseKey(t, e.cli, m.Prefix(), s.Lease(), p.done)
					unblock := func() {
						leave(blocker)
						if err := blocker.Unlock(ctxT(t, 5*time.Second)); err != nil {
							t.Errorf("Unlock: %v", err)
						}
					}
					if rng.IntN(2) == 0 {
						revokeSession(t, e.cli, s) // surely while it waits for blocker
						unblock()
					} else {
						unblock() // then it may still wait for others, confirm, or hold
						time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
						revokeSession(t, e.cli, s)
					}
					<-p.done
					if p.err == nil {
						stats.grantedFirst.Add(1)
						checkLost(t, p.h, leave)
					} else {
						if !errors.Is(p.err, lock.ErrSessionExpired) {
							t.Errorf("waiter revoked mid-wait = %v, want ErrSessionExpired", p.err)
						}
						stats.midWait.Add(1)
					}
					renew()
				case fate < 5: // revoke while holding
					<-p.done
					if p.err != nil {
						t.Errorf("acquire: %v", p.err)
						return
					}
					revokeSession(t, e.cli, s)
					stats.holding.Add(1)
					checkLost(t, p.h, leave)
					renew()
				default:
					<-p.done
					if p.err != nil {
						t.Errorf("acquire: %v", p.err)
						return
					}
					time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond) // work
					leave(p.h)
					if err := p.h.Unlock(ctxT(t, 5*time.Second)); err != nil {
						t.Errorf("Unlock: %v", err)
					}
				}
			}
			_ = m.Close()
		})
	}
	wg.Wait()
	t.Logf("revoked mid-wait %d, while holding %d, granted just before the revoke %d",
		stats.midWait.Load(), stats.holding.Load(), stats.grantedFirst.Load())
	if stats.midWait.Load() == 0 || stats.holding.Load() == 0 {
		t.Errorf("the random schedule revoked no waiter mid-wait or no holder; seed %d", seed)
	}
}

// checkLost checks that h, whose session was revoked, reports the loss, and that
// its Unlock says it was not held.
func checkLost(t *testing.T, h *lock.Hold, leave func(*lock.Hold)) {
	t.Helper()
	select {
	case <-h.Done():
	case <-time.After(5 * time.Second):
		t.Errorf("hold %v: no loss reported 5s after its session was revoked", h.Token())
	}
	leave(h)
	if !errors.Is(h.Err(), lock.ErrLost) {
		t.Errorf("hold %v: Err = %v, want ErrLost", h.Token(), h.Err())
	}
	if err := h.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Unlock of lost hold = %v, want ErrNotHeld", err)
	}
}

// waitLeaseKey blocks until a key of lease exists under prefix (any depth),
// or stop is closed.
func waitLeaseKey(t *testing.T, cli *clientv3.Client, prefix string, id clientv3.LeaseID, stop <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	<-w
	for {
		// Not WithKeysOnly: etcd 3.7 answers those from its index, without
		// the lease.
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			t.Errorf("Get: %v", err)
			return
		}
		for _, kv := range resp.Kvs {
			if kv.Lease == int64(id) {
				return
			}
		}
		select {
		case <-w:
		case <-stop:
			return
		case <-ctx.Done():
			t.Errorf("no key of lease %x under %s", id, prefix)
			return
		}
	}
}

func TestRWTokensRise(t *testing.T) {
	e := newEnv(t)
	a, b := e.rwmutex(e.cli, "tok"), e.rwmutex(e.client(), "tok")
	var last int64
	for i := range 8 {
		m := a
		if i%3 == 1 {
			m = b
		}
		var h *lock.Hold
		if i%2 == 0 {
			h = mustRLock(t, m)
		} else {
			h = mustWLock(t, m)
		}
		if h.Token().Revision <= last {
			t.Fatalf("token %v not above the previous %d", h.Token(), last)
		}
		last = h.Token().Revision
		mustUnlock(t, h)
	}
}

func TestRWDo(t *testing.T) {
	e := newEnv(t)
	m := e.rwmutex(e.cli, "do")
	ctx := ctxT(t, 10*time.Second)
	err := m.Do(ctx, func(ctx context.Context, tok fencing.Token) error {
		if _, err := m.TryRLock(ctx); !errors.Is(err, lock.ErrLocked) {
			return fmt.Errorf("TryRLock inside Do = %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = m.RDo(ctx, func(ctx context.Context, tok fencing.Token) error {
		if _, err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
			return fmt.Errorf("TryLock inside RDo = %v", err)
		}
		h, err := m.TryRLock(ctx)
		if err != nil {
			return fmt.Errorf("TryRLock inside RDo = %v", err)
		}
		return h.Unlock(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = m.RDo(ctx, func(ctx context.Context, tok fencing.Token) error {
		if _, err := e.cli.Delete(ctx, tok.Key); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	})
	if !errors.Is(err, lock.ErrLost) {
		t.Fatalf("RDo with its key deleted = %v, want ErrLost", err)
	}
}

func TestRWCloseAndBadInput(t *testing.T) {
	e := newEnv(t)
	if _, err := lock.NewRWMutex(nil, "x"); !errors.Is(err, lock.ErrNilClient) {
		t.Fatalf("nil client: %v", err)
	}
	if _, err := lock.NewRWMutex(e.cli, ""); !errors.Is(err, lock.ErrInvalidName) {
		t.Fatalf("empty name: %v", err)
	}
	if _, err := lock.NewRWMutex(e.cli, "x", lock.WithTTL(0)); !errors.Is(err, lock.ErrInvalidOption) {
		t.Fatalf("zero TTL: %v", err)
	}
	h := mustWLock(t, e.rwmutex(e.cli, "close"))
	m, err := lock.NewRWMutex(e.client(), "close", lock.WithNamespace(e.ns), lock.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	r := goAcquire(func() (*lock.Hold, error) { return m.RLock(context.Background()) })
	w := goAcquire(func() (*lock.Hold, error) { return m.Lock(context.Background()) })
	waitKeys(t, e.cli, m.Prefix(), 3)
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, p := range []*pendingHold{r, w} {
		if err := failedAcquire(t, p, "wait during Close"); !errors.Is(err, lock.ErrClosed) {
			t.Fatalf("wait during Close = %v, want ErrClosed", err)
		}
	}
	if _, err := m.TryRLock(context.Background()); !errors.Is(err, lock.ErrClosed) {
		t.Fatalf("TryRLock after Close = %v, want ErrClosed", err)
	}
	mustUnlock(t, h)
}
