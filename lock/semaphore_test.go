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
	"go.uber.org/zap/zaptest"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/lock"
)

// semaphore returns a Semaphore closed at cleanup, with a 2s TTL unless the
// options give a session.
func (e *env) semaphore(cli *clientv3.Client, name string, limit int64, opts ...lock.Option) *lock.Semaphore {
	e.t.Helper()
	base := []lock.Option{lock.WithNamespace(e.ns), lock.WithLogger(zaptest.NewLogger(e.t))}
	if len(opts) == 0 {
		base = append(base, lock.WithTTL(2*time.Second))
	}
	s, err := lock.NewSemaphore(cli, name, limit, append(base, opts...)...)
	if err != nil {
		e.t.Fatalf("NewSemaphore: %v", err)
	}
	e.t.Cleanup(func() {
		if err := s.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
	return s
}

func mustAcquire(t *testing.T, s *lock.Semaphore, k int64) *lock.Hold {
	t.Helper()
	h, err := s.Acquire(ctxT(t, 10*time.Second), k)
	if err != nil {
		t.Fatalf("Acquire(%d): %v", k, err)
	}
	return h
}

func TestSemAcquireRelease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.semaphore(e.cli, "basic", 3)
	if s.Limit() != 3 || s.Name() != "basic" {
		t.Fatalf("Limit, Name = %d, %q", s.Limit(), s.Name())
	}
	ctx := ctxT(t, 10*time.Second)
	h1 := mustAcquire(t, s, 1)
	h2 := mustAcquire(t, s, 2)
	if !h2.Token().Newer(h1.Token()) {
		t.Fatalf("tokens %v, %v do not rise", h1.Token(), h2.Token())
	}
	if _, err := s.TryAcquire(ctx, 1); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryAcquire on a full semaphore = %v, want ErrLocked", err)
	}
	waitKeys(t, e.cli, s.Prefix(), 2) // the refused try left nothing
	mustUnlock(t, h1)
	h3, err := s.TryAcquire(ctx, 1)
	if err != nil {
		t.Fatalf("TryAcquire with one permit free: %v", err)
	}
	if err := h1.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("double Unlock = %v, want ErrNotHeld", err)
	}
	mustUnlock(t, h2)
	mustUnlock(t, h3)
	h4 := mustAcquire(t, s, 3) // all at once
	mustUnlock(t, h4)
}

// TestSemNeverOverLimit runs 12 workers on two clients, 25 rounds each of
// a random Acquire or TryAcquire of 1 to 4 permits out of 4, and checks the
// permits held never exceed 4.
func TestSemNeverOverLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const workers, rounds, limit = 12, 25, 4
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	var (
		held, most atomic.Int64
		wg         sync.WaitGroup
	)
	other := e.client()
	for i := range workers {
		cli := e.cli
		if i%2 == 1 {
			cli = other
		}
		s := e.semaphore(cli, "n", limit)
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() {
			for range rounds {
				k := 1 + rng.Int64N(limit)
				ctx := ctxT(t, 60*time.Second)
				var (
					h   *lock.Hold
					err error
				)
				if rng.IntN(4) == 0 {
					if h, err = s.TryAcquire(ctx, k); errors.Is(err, lock.ErrLocked) {
						continue
					}
				} else {
					h, err = s.Acquire(ctx, k)
				}
				if err != nil {
					t.Errorf("Acquire(%d): %v", k, err)
					return
				}
				n := held.Add(k)
				if n > limit {
					t.Errorf("%d permits held at once, limit %d", n, limit)
				}
				for old := most.Load(); n > old && !most.CompareAndSwap(old, n); old = most.Load() {
				}
				time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond) // work
				held.Add(-k)
				if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
					t.Errorf("Unlock: %v", err)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("at most %d permits held at once", most.Load())
}

// TestSemFIFO queues waiters one at a time behind a full semaphore, with
// permit counts such that no two fit together: they must be granted in the
// order they asked, with rising tokens.
func TestSemFIFO(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const limit = 3
	s := e.semaphore(e.cli, "fifo", limit)
	first := mustAcquire(t, s, limit)
	ks := []int64{2, 3, 2, 2, 3, 2, 2}
	var (
		mu     sync.Mutex
		order  []int
		tokens []int64
		wg     sync.WaitGroup
	)
	for i, k := range ks {
		w := e.semaphore(e.client(), "fifo", limit)
		wg.Go(func() {
			h, err := w.Acquire(ctxT(t, 30*time.Second), k)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			mu.Lock()
			order = append(order, i)
			tokens = append(tokens, h.Token().Revision)
			mu.Unlock()
			if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
				t.Errorf("waiter %d unlock: %v", i, err)
			}
		})
		waitKeys(t, e.cli, s.Prefix(), int64(i+2))
	}
	mustUnlock(t, first)
	wg.Wait()
	if len(order) != len(ks) {
		t.Fatalf("order %v", order)
	}
	for i, w := range order {
		if w != i || (i > 0 && tokens[i] <= tokens[i-1]) {
			t.Fatalf("granted in order %v with tokens %v, want 0..%d with rising tokens", order, tokens, len(ks)-1)
		}
	}
}

// TestSemLargeHeadNoBarging: a holds 2 of 3 permits, b asks for 3 and
// waits. Requests for 1 permit, which would fit beside a, must not overtake
// b; once b is done, they hold together.
func TestSemLargeHeadNoBarging(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.semaphore(e.cli, "head", 3)
	ctx := ctxT(t, 30*time.Second)
	a := mustAcquire(t, s, 2)
	bs := e.semaphore(e.client(), "head", 3)
	b := goAcquire(func() (*lock.Hold, error) { return bs.Acquire(ctx, 3) })
	waitKeys(t, e.cli, s.Prefix(), 2)
	if _, err := s.TryAcquire(ctx, 1); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryAcquire(1) behind a waiting large request = %v, want ErrLocked", err)
	}
	waitKeys(t, e.cli, s.Prefix(), 2)
	c := goAcquire(func() (*lock.Hold, error) { return s.Acquire(ctx, 1) })
	waitKeys(t, e.cli, s.Prefix(), 3)
	d := goAcquire(func() (*lock.Hold, error) { return bs.Acquire(ctx, 1) })
	waitKeys(t, e.cli, s.Prefix(), 4)
	stillWaiting(t, b, "b")
	stillWaiting(t, c, "c beside a")
	stillWaiting(t, d, "d beside a")
	mustUnlock(t, a)
	bh := grantedHold(t, b, "b")
	stillWaiting(t, c, "c beside b")
	stillWaiting(t, d, "d beside b")
	mustUnlock(t, bh)
	ch, dh := grantedHold(t, c, "c"), grantedHold(t, d, "d")
	if ch.Err() != nil || dh.Err() != nil {
		t.Fatalf("c and d do not hold together: %v, %v", ch.Err(), dh.Err())
	}
	if !ch.Token().Newer(bh.Token()) || !dh.Token().Newer(ch.Token()) {
		t.Fatalf("tokens b %v, c %v, d %v not in queue order", bh.Token(), ch.Token(), dh.Token())
	}
	mustUnlock(t, ch)
	mustUnlock(t, dh)
}

// TestSemReleaseCostsNoReads: a waiter for 6 permits behind six holders of 1
// makes no round trip as the first five release, and one when the last
// does: at most four in all (the enqueue, possibly one read after opening
// its watch, one read when it fits, and a spare for a serializable read that
// found the member behind the watch), where re-reading on every release
// would take at least seven.
func TestSemReleaseCostsNoReads(t *testing.T) {
	e := newEnv(t)
	const limit = 6
	s := e.semaphore(e.cli, "rt", limit)
	var holds []*lock.Hold
	for range limit {
		holds = append(holds, mustAcquire(t, s, 1))
	}
	cli, c := e.countingClient()
	ws := e.semaphore(cli, "rt", limit)
	w := goAcquire(func() (*lock.Hold, error) { return ws.Acquire(ctxT(t, 30*time.Second), limit) })
	waitKeys(t, e.cli, s.Prefix(), limit+1)
	for i, h := range holds {
		stillWaiting(t, w, fmt.Sprintf("waiter with %d holders ahead", limit-i))
		mustUnlock(t, h)
	}
	wh := grantedHold(t, w, "waiter")
	if n := c.n.Load(); n > 4 {
		t.Errorf("waiter made %d round trips, want at most 4", n)
	}
	mustUnlock(t, wh)
}

func TestSemLimitMismatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t, 10*time.Second)
	three := e.semaphore(e.cli, "lim", 3)
	five := e.semaphore(e.client(), "lim", 5)
	h := mustAcquire(t, three, 1)
	for _, try := range []bool{false, true} {
		var err error
		if try {
			_, err = five.TryAcquire(ctx, 1)
		} else {
			_, err = five.Acquire(ctx, 1)
		}
		var lm *lock.LimitMismatchError
		if !errors.Is(err, lock.ErrLimitMismatch) || !errors.As(err, &lm) {
			t.Fatalf("Acquire with another limit (try %v) = %v, want a *LimitMismatchError", try, err)
		}
		if lm.Limit != 5 || lm.Stored != 3 || lm.Key != h.Token().Key || lm.Name != "lim" {
			t.Fatalf("mismatch error %+v", lm)
		}
	}
	waitKeys(t, e.cli, three.Prefix(), 1) // the refused requests left nothing
	mustUnlock(t, h)

	// Empty, the semaphore takes the limit of whoever comes first.
	h5 := mustAcquire(t, five, 4)
	if _, err := three.Acquire(ctx, 1); !errors.Is(err, lock.ErrLimitMismatch) {
		t.Fatalf("Acquire with limit 3 behind limit 5 = %v, want ErrLimitMismatch", err)
	}
	mustUnlock(t, h5)

	// A key that is no semaphore entry is reported, not counted.
	junk := three.Prefix() + "junk"
	if _, err := e.cli.Put(ctx, junk, "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := three.Acquire(ctx, 1); !errors.Is(err, lock.ErrLimitMismatch) {
		t.Fatalf("Acquire behind a foreign key = %v, want ErrLimitMismatch", err)
	}
	if _, err := e.cli.Delete(ctx, junk); err != nil {
		t.Fatal(err)
	}
}

func TestSemBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, limit := range []int64{0, -1, lock.MaxSemaphoreLimit + 1} {
		if s, err := lock.NewSemaphore(e.cli, "x", limit); !errors.Is(err, lock.ErrInvalidOption) || s != nil {
			t.Fatalf("NewSemaphore(limit %d) = %v, %v; want ErrInvalidOption", limit, s, err)
		}
	}
	if _, err := lock.NewSemaphore(nil, "x", 1); !errors.Is(err, lock.ErrNilClient) {
		t.Fatalf("nil client: %v", err)
	}
	if _, err := lock.NewSemaphore(e.cli, "", 1); !errors.Is(err, lock.ErrInvalidName) {
		t.Fatalf("empty name: %v", err)
	}
	s := e.semaphore(e.cli, "x", 2)
	ctx := ctxT(t, 5*time.Second)
	for _, k := range []int64{0, -1, 3} {
		if _, err := s.Acquire(ctx, k); !errors.Is(err, lock.ErrInvalidPermits) {
			t.Fatalf("Acquire(%d) = %v, want ErrInvalidPermits", k, err)
		}
		if _, err := s.TryAcquire(ctx, k); !errors.Is(err, lock.ErrInvalidPermits) {
			t.Fatalf("TryAcquire(%d) = %v, want ErrInvalidPermits", k, err)
		}
	}
	big := e.semaphore(e.cli, "big", lock.MaxSemaphoreLimit)
	h := mustAcquire(t, big, lock.MaxSemaphoreLimit)
	mustUnlock(t, h)
}

// TestSemCancelAndTimeoutLeaveNoKeys also checks that a cancelled large
// request stops holding back the small ones behind it.
func TestSemCancelAndTimeoutLeaveNoKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.semaphore(e.cli, "c", 3)
	w := e.semaphore(e.client(), "c", 3)
	a := mustAcquire(t, s, 2)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := w.Acquire(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with timeout = %v, want DeadlineExceeded", err)
	}
	waitKeys(t, e.cli, s.Prefix(), 1)

	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	b := goAcquire(func() (*lock.Hold, error) { return w.Acquire(bctx, 3) })
	waitKeys(t, e.cli, s.Prefix(), 2)
	c := goAcquire(func() (*lock.Hold, error) { return w.Acquire(ctxT(t, 30*time.Second), 1) })
	waitKeys(t, e.cli, s.Prefix(), 3)
	stillWaiting(t, c, "c behind b")
	bcancel()
	if err := failedAcquire(t, b, "cancelled b"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire = %v, want Canceled", err)
	}
	ch := grantedHold(t, c, "c once b gave up")
	waitKeys(t, e.cli, s.Prefix(), 2)
	if _, err := w.Acquire(bctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with cancelled ctx = %v", err)
	}
	mustUnlock(t, ch)
	mustUnlock(t, a)
	waitKeys(t, e.cli, s.Prefix(), 0)
}

// TestSemSessionRevoked revokes a waiter's session mid-wait (it fails, the
// waiter behind it keeps its place) and a holder's (its hold is lost and
// the permits pass on).
func TestSemSessionRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.semaphore(e.cli, "rv", 2)
	ctx := ctxT(t, 30*time.Second)
	a := mustAcquire(t, s, 2)
	cli := e.client()
	sess := newTestSession(t, cli)
	ss := e.semaphore(cli, "rv", 2, lock.WithSession(sess))
	b := goAcquire(func() (*lock.Hold, error) { return ss.Acquire(ctx, 1) })
	waitKeys(t, e.cli, s.Prefix(), 2)
	c := goAcquire(func() (*lock.Hold, error) { return s.Acquire(ctx, 2) })
	waitKeys(t, e.cli, s.Prefix(), 3)
	revokeSession(t, e.cli, sess)
	if err := failedAcquire(t, b, "b"); !errors.Is(err, lock.ErrSessionExpired) {
		t.Fatalf("b after revoke = %v, want ErrSessionExpired", err)
	}
	waitKeys(t, e.cli, s.Prefix(), 2)
	stillWaiting(t, c, "c while a holds")
	mustUnlock(t, a)
	ch := grantedHold(t, c, "c")
	mustUnlock(t, ch)

	// A holder's session ends while a waiter needs its permits.
	sess2 := newTestSession(t, cli)
	ss2 := e.semaphore(cli, "rv", 2, lock.WithSession(sess2))
	h := mustAcquire(t, ss2, 1)
	d := goAcquire(func() (*lock.Hold, error) { return s.Acquire(ctx, 2) })
	waitKeys(t, e.cli, s.Prefix(), 2)
	stillWaiting(t, d, "d beside h")
	revokeSession(t, e.cli, sess2)
	waitClosed(t, h.Done(), 2*time.Second, "holder's Done after revoke")
	if !errors.Is(h.Err(), lock.ErrLost) {
		t.Fatalf("holder Err = %v, want ErrLost", h.Err())
	}
	dh := grantedHold(t, d, "d")
	if !dh.Token().Newer(h.Token()) {
		t.Fatalf("token %v not above the lost hold's %v", dh.Token(), h.Token())
	}
	if err := h.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("Unlock of lost hold = %v, want ErrNotHeld", err)
	}
	mustUnlock(t, dh)
}

func TestSemTokensRise(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.semaphore(e.cli, "tok", 3), e.semaphore(e.client(), "tok", 3)
	var last int64
	for i := range 6 {
		s := a
		if i%2 == 1 {
			s = b
		}
		h := mustAcquire(t, s, int64(1+i%3))
		if h.Token().Revision <= last {
			t.Fatalf("token %v not above the previous %d", h.Token(), last)
		}
		last = h.Token().Revision
		mustUnlock(t, h)
	}
}

func TestSemDoAndClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.semaphore(e.cli, "do", 2)
	ctx := ctxT(t, 10*time.Second)
	err := s.Do(ctx, 2, func(ctx context.Context, tok fencing.Token) error {
		if _, err := s.TryAcquire(ctx, 1); !errors.Is(err, lock.ErrLocked) {
			return fmt.Errorf("TryAcquire inside Do = %v", err)
		}
		_, err := fencing.Commit(ctx, e.cli, tok) // the token fences etcd writes
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Do(ctx, 3, nil); !errors.Is(err, lock.ErrInvalidPermits) {
		t.Fatalf("Do(3) = %v, want ErrInvalidPermits", err)
	}

	h := mustAcquire(t, s, 2)
	w, err := lock.NewSemaphore(e.client(), "do", 2, lock.WithNamespace(e.ns), lock.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	p := goAcquire(func() (*lock.Hold, error) { return w.Acquire(context.Background(), 1) })
	waitKeys(t, e.cli, s.Prefix(), 2)
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := failedAcquire(t, p, "wait during Close"); !errors.Is(err, lock.ErrClosed) {
		t.Fatalf("Acquire during Close = %v, want ErrClosed", err)
	}
	if _, err := w.TryAcquire(context.Background(), 1); !errors.Is(err, lock.ErrClosed) {
		t.Fatalf("TryAcquire after Close = %v, want ErrClosed", err)
	}
	mustUnlock(t, h)
}
