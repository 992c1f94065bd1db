package lock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap/zaptest"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/testutil"
	"github.com/etcdlock/etcdlock/lock"
)

func TestMain(m *testing.M) { integration.Main(m) }

// Helpers shared with election's tests.
var (
	ctxT           = testutil.Ctx
	waitKeys       = testutil.WaitKeys
	waitClosed     = testutil.WaitClosed
	newTestSession = testutil.NewSession
	endedContexts  = testutil.EndedContexts
)

// env is one test's view of the shared server: a client and a namespace that
// must be empty when the test ends.
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

// client returns another client of the shared server.
func (e *env) client() *clientv3.Client { return testutil.Client(e.t) }

// mutex returns a Mutex closed at cleanup, with a 2s TTL unless
// the options give a session.
func (e *env) mutex(cli *clientv3.Client, name string, opts ...lock.Option) *lock.Mutex {
	e.t.Helper()
	base := []lock.Option{lock.WithNamespace(e.ns), lock.WithLogger(zaptest.NewLogger(e.t))}
	if len(opts) == 0 {
		base = append(base, lock.WithTTL(2*time.Second))
	}
	opts = append(base, opts...)
	m, err := lock.NewMutex(cli, name, opts...)
	if err != nil {
		e.t.Fatalf("NewMutex: %v", err)
	}
	e.t.Cleanup(func() {
		if err := m.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
	return m
}

func mustLock(t *testing.T, m *lock.Mutex) *lock.Hold {
	t.Helper()
	h, err := m.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	return h
}

func mustUnlock(t *testing.T, h *lock.Hold) {
	t.Helper()
	if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

func TestLockUnlock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "a")
	h := mustLock(t, m)
	tok := h.Token()
	if tok.Revision <= 0 || !strings.HasPrefix(tok.Key, m.Prefix()) {
		t.Fatalf("token %v not under %s", tok, m.Prefix())
	}
	if h.Err() != nil {
		t.Fatalf("Err while held: %v", h.Err())
	}
	resp, err := e.cli.Get(ctxT(t, 5*time.Second), tok.Key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != tok.Revision {
		t.Fatalf("key of hold: %v %v", resp, err)
	}
	mustUnlock(t, h)
	waitClosed(t, h.Done(), time.Second, "Done after Unlock")
	if !errors.Is(h.Err(), lock.ErrReleased) {
		t.Fatalf("Err after Unlock = %v, want ErrReleased", h.Err())
	}
	if err := h.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("double Unlock = %v, want ErrNotHeld", err)
	}
	h2 := mustLock(t, m)
	if h2.Token().Revision <= tok.Revision {
		t.Fatalf("second token %v not above first %v", h2.Token(), tok)
	}
	mustUnlock(t, h2)
}

func TestFIFO(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 10
	first := mustLock(t, e.mutex(e.cli, "fifo"))
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := range n {
		m := e.mutex(e.client(), "fifo")
		// Enqueue one at a time so the expected order is known.
		wg.Go(func() {
			h, err := m.Lock(ctxT(t, 30*time.Second))
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
				t.Errorf("waiter %d unlock: %v", i, err)
			}
		})
		waitKeys(t, e.cli, m.Prefix(), int64(i+2))
	}
	mustUnlock(t, first)
	wg.Wait()
	if len(order) != n {
		t.Fatalf("order %v", order)
	}
	for i, w := range order {
		if w != i {
			t.Fatalf("waiters ran in order %v, want 0..%d", order, n-1)
		}
	}
}

func TestTryLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "try")
	h, err := m.TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("TryLock on free lock: %v", err)
	}
	other := e.mutex(e.client(), "try")
	if _, err := other.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) || errors.Is(err, lock.ErrHeldBySelf) {
		t.Fatalf("TryLock on a lock another Mutex holds = %v, want ErrLocked, not ErrHeldBySelf", err)
	}
	// The same Mutex, holding: the error says so, and still matches ErrLocked.
	if _, err := m.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrHeldBySelf) || !errors.Is(err, lock.ErrLocked) ||
		!strings.Contains(err.Error(), "held by this Mutex") {
		t.Fatalf("TryLock on a lock this Mutex holds = %v, want ErrHeldBySelf matching ErrLocked", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 1) // the failed TryLock left nothing
	mustUnlock(t, h)
	h2, err := other.TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("TryLock after unlock: %v", err)
	}
	mustUnlock(t, h2)
}

func TestCancelAndTimeoutLeaveNoKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "c")
	h := mustLock(t, m)
	w := e.mutex(e.client(), "c")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := w.Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with timeout = %v, want DeadlineExceeded", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 1)

	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := w.Lock(ctx); errc <- err }()
	waitKeys(t, e.cli, m.Prefix(), 2)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Lock = %v, want Canceled", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 1)

	// An already-cancelled context does nothing at all.
	if _, err := w.Lock(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with cancelled ctx = %v", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 1)
	mustUnlock(t, h)
}

func TestWaiterSessionRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := mustLock(t, e.mutex(e.cli, "ws"))
	cli := e.client()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w := e.mutex(cli, "ws", lock.WithSession(s))
	errc := make(chan error, 1)
	go func() { _, err := w.Lock(context.Background()); errc <- err }()
	waitKeys(t, e.cli, w.Prefix(), 2)
	if _, err := e.cli.Revoke(ctxT(t, 5*time.Second), s.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, lock.ErrSessionExpired) {
			t.Fatalf("Lock after revoke = %v, want ErrSessionExpired", err)
		}
	case <-time.After(2 * time.Second): // TTL is 10s: only the watch can be this quick
		t.Fatal("waiter did not notice its session ended")
	}
	mustUnlock(t, h)
}

func TestHolderSessionRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := e.mutex(cli, "hs", lock.WithSession(s))
	h := mustLock(t, m)
	next := e.mutex(e.cli, "hs")
	got := make(chan *lock.Hold, 1)
	go func() {
		h2, err := next.Lock(ctxT(t, 10*time.Second))
		if err != nil {
			t.Errorf("next Lock: %v", err)
		}
		got <- h2
	}()
	waitKeys(t, e.cli, m.Prefix(), 2)
	if _, err := e.cli.Revoke(ctxT(t, 5*time.Second), s.Lease()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h.Done(), 2*time.Second, "holder's Done after revoke")
	if !errors.Is(h.Err(), lock.ErrLost) {
		t.Fatalf("Err = %v, want ErrLost", h.Err())
	}
	h2 := <-got
	if h2 == nil {
		return
	}
	if h2.Token().Revision <= h.Token().Revision {
		t.Fatalf("next token %v not above %v", h2.Token(), h.Token())
	}
	// The lost hold's Unlock says so and deletes nothing of the new holder.
	if err := h.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) || !errors.Is(err, lock.ErrLost) {
		t.Fatalf("Unlock of lost hold = %v, want ErrNotHeld wrapping ErrLost", err)
	}
	if h2.Err() != nil {
		t.Fatalf("new hold disturbed: %v", h2.Err())
	}
	mustUnlock(t, h2)
}

func TestStaleUnlockCannotDeleteNewerHold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "stale")
	h := mustLock(t, m)
	key := h.Token().Key
	ctx := ctxT(t, 5*time.Second)
	// Someone deletes the key and a new hold is created under the very same
	// key name: only the revision tells them apart.
	if _, err := e.cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h.Done(), 2*time.Second, "Done after delete")
	if !errors.Is(h.Err(), lock.ErrDeleted) {
		t.Fatalf("Err = %v, want ErrDeleted", h.Err())
	}
	put, err := e.cli.Put(ctx, key, "newer")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("stale Unlock = %v, want ErrNotHeld", err)
	}
	if err := h.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("stale Unlock retried = %v, want ErrNotHeld", err)
	}
	resp, err := e.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != put.Header.Revision {
		t.Fatalf("newer key was touched: %v %v", resp, err)
	}
	if _, err := e.cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
}

func TestNamesDoNotNest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := mustLock(t, e.mutex(e.cli, "a"))
	ab, err := e.mutex(e.cli, "a/b").TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("lock a/b while a is held: %v", err)
	}
	mustUnlock(t, a)
	// And the other way round: a waits for nobody while a/b is held.
	a2, err := e.mutex(e.cli, "a").TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("lock a while a/b is held: %v", err)
	}
	mustUnlock(t, a2)
	mustUnlock(t, ab)
}

func TestTwoHoldsOnOneSessionExclude(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m1 := e.mutex(e.cli, "same", lock.WithSession(s))
	m2 := e.mutex(e.cli, "same", lock.WithSession(s))
	h1 := mustLock(t, m1)
	if _, err := m2.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("second hold on one session = %v, want ErrLocked", err)
	}
	if _, err := m1.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("second hold through one Mutex = %v, want ErrLocked", err)
	}
	ctx := ctxT(t, 10*time.Second)
	second := goAcquire(func() (*lock.Hold, error) { return m2.Lock(ctx) })
	waitKeys(t, e.cli, m1.Prefix(), 2)
	stillWaiting(t, second, "second hold on one session, while the first is held")
	mustUnlock(t, h1)
	mustUnlock(t, grantedHold(t, second, "second hold on one session, after the first"))
}

func TestMutualExclusionAndTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const workers, rounds = 16, 50
	var (
		inside atomic.Int32
		mu     sync.Mutex
		last   int64
		wg     sync.WaitGroup
	)
	for i := range workers {
		cli := e.cli
		if i%2 == 1 {
			cli = e.client()
		}
		m := e.mutex(cli, "mx")
		wg.Go(func() {
			for range rounds {
				err := m.Do(ctxT(t, 60*time.Second), func(ctx context.Context, tok fencing.Token) error {
					if n := inside.Add(1); n != 1 {
						t.Errorf("%d holders at once", n)
					}
					mu.Lock()
					if tok.Revision <= last {
						t.Errorf("token %d not above previous %d", tok.Revision, last)
					}
					last = tok.Revision
					mu.Unlock()
					inside.Add(-1)
					return nil
				})
				if err != nil {
					t.Errorf("Do: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestFencedWriteRejectedAfterLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "fw")
	h := mustLock(t, m)
	ctx := ctxT(t, 5*time.Second)
	data := e.ns + "data"
	if _, err := fencing.Commit(ctx, e.cli, h.Token(), clientv3.OpPut(data, "1")); err != nil {
		t.Fatalf("fenced write while held: %v", err)
	}
	if _, err := e.cli.Delete(ctx, h.Token().Key); err != nil {
		t.Fatal(err)
	}
	if _, err := fencing.Commit(ctx, e.cli, h.Token(), clientv3.OpPut(data, "2")); !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("fenced write after loss = %v, want ErrFenced", err)
	}
	resp, err := e.cli.Get(ctx, data)
	if err != nil || string(resp.Kvs[0].Value) != "1" {
		t.Fatalf("data = %v %v, want 1", resp, err)
	}
	waitClosed(t, h.Done(), 2*time.Second, "Done")
	if _, err := e.cli.Delete(ctx, data); err != nil {
		t.Fatal(err)
	}
}

func TestDoReportsLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "do")
	err := m.Do(ctxT(t, 10*time.Second), func(ctx context.Context, tok fencing.Token) error {
		if _, err := e.cli.Delete(ctx, tok.Key); err != nil {
			return err
		}
		<-ctx.Done() // the loss cancels fn's context
		return nil
	})
	if !errors.Is(err, lock.ErrLost) || !errors.Is(err, lock.ErrDeleted) {
		t.Fatalf("Do = %v, want ErrLost/ErrDeleted", err)
	}
	want := errors.New("boom")
	if err := m.Do(ctxT(t, 10*time.Second), func(context.Context, fencing.Token) error { return want }); !errors.Is(err, want) {
		t.Fatalf("Do = %v, want fn's error", err)
	}
}

func TestCloseEndsWaitsAndHolds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := mustLock(t, e.mutex(e.cli, "close"))
	m, err := lock.NewMutex(e.client(), "close", lock.WithNamespace(e.ns), lock.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := m.Lock(context.Background()); errc <- err }()
	waitKeys(t, e.cli, m.Prefix(), 2)
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, lock.ErrClosed) {
		t.Fatalf("Lock during Close = %v, want ErrClosed", err)
	}
	if _, err := m.Lock(context.Background()); !errors.Is(err, lock.ErrClosed) {
		t.Fatalf("Lock after Close = %v, want ErrClosed", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	mustUnlock(t, h)

	// Close releases holds still held.
	m2, err := lock.NewMutex(e.cli, "close", lock.WithNamespace(e.ns), lock.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	h2 := mustLock(t, m2)
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h2.Done(), time.Second, "Done after Close")
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cases := []struct {
		name string
		cli  *clientv3.Client
		lock string
		opts []lock.Option
		want error
	}{
		{"nil client", nil, "x", nil, lock.ErrNilClient},
		{"empty name", e.cli, "", nil, lock.ErrInvalidName},
		{"long name", e.cli, strings.Repeat("n", lock.MaxNameLen+1), nil, lock.ErrInvalidName},
		{"bad utf8", e.cli, "\xff", nil, lock.ErrInvalidName},
		{"long namespace", e.cli, "x", []lock.Option{lock.WithNamespace(strings.Repeat("n", lock.MaxNamespaceLen+1))}, lock.ErrInvalidNamespace},
		{"zero ttl", e.cli, "x", []lock.Option{lock.WithTTL(0)}, lock.ErrInvalidOption},
		{"sub-second ttl", e.cli, "x", []lock.Option{lock.WithTTL(500 * time.Millisecond)}, lock.ErrInvalidOption},
		{"fractional ttl", e.cli, "x", []lock.Option{lock.WithTTL(1500 * time.Millisecond)}, lock.ErrInvalidOption},
		{"negative margin", e.cli, "x", []lock.Option{lock.WithSafetyMargin(-time.Second)}, lock.ErrInvalidOption},
		{"margin over half ttl", e.cli, "x", []lock.Option{lock.WithTTL(2 * time.Second), lock.WithSafetyMargin(time.Second)}, lock.ErrInvalidOption},
		{"session and ttl", e.cli, "x", []lock.Option{lock.WithSession(s), lock.WithTTL(2 * time.Second)}, lock.ErrInvalidOption},
		{"nil session", e.cli, "x", []lock.Option{lock.WithSession(nil)}, lock.ErrInvalidOption},
		{"long holder", e.cli, "x", []lock.Option{lock.WithHolder(strings.Repeat("h", 5000))}, lock.ErrInvalidOption},
		{"zero option", e.cli, "x", []lock.Option{nil}, lock.ErrInvalidOption},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := lock.NewMutex(c.cli, c.lock, c.opts...)
			if !errors.Is(err, c.want) || m != nil {
				t.Fatalf("NewMutex = %v, %v; want %v", m, err, c.want)
			}
		})
	}
}
