package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/lock"
)

func TestRWTryLeavesNoKeys(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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

func TestRWCloseAndBadInput(t *testing.T) {
	t.Parallel()
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
