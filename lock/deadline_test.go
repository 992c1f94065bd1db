package lock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/testctx"
	"github.com/etcdlock/etcdlock/lock"
)

// A Lock whose context's deadline comes while a request is at the server
// returns the context's error (context.DeadlineExceeded), not etcd's
// "request timed out": the server times the request out by the deadline
// the client sent, which can come before the client's timer fires.
func TestShortDeadlineIsTheContextsError(t *testing.T) {
	e := newEnv(t)
	m := e.mutex(e.cli, "short")
	held := mustLock(t, e.mutex(e.client(), "short"))
	defer mustUnlock(t, held)
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Go(func() {
			for i := 0; i < 100; i++ {
				d := time.Duration(i%12) * 250 * time.Microsecond
				ctx, cancel := context.WithTimeout(context.Background(), d)
				h, err := m.Lock(ctx)
				cancel()
				if err == nil {
					t.Errorf("Lock granted %v while %v holds", h.Token(), held.Token())
					return
				}
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Lock with a %v deadline = %v, want context.DeadlineExceeded", d, err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitKeys(t, e.cli, e.ns, 1)
}

// Lock, Unlock, Inspect and fencing.Commit report the context's error, not
// etcd's timeout, for a request whose deadline passed at the server before
// the caller's timer fired; Lock and Unlock leave no key. Deadlines of 0 to
// 1 ms catch some requests in flight (those that finish first succeed).
func TestDeadlineBeforeTimerFires(t *testing.T) {
	e := newEnv(t)
	m := e.mutex(e.cli, "lag")
	mustUnlock(t, mustLock(t, m)) // the lease is granted
	const lag = 30 * time.Millisecond
	failed := 0
	check := func(what string, err error) {
		t.Helper()
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded):
			failed++
		default:
			t.Fatalf("%s = %v, want context.DeadlineExceeded", what, err)
		}
	}
	for i := range 40 {
		in := time.Duration(i) * 25 * time.Microsecond
		h, err := m.Lock(testctx.LateTimer(t, in, lag))
		check("Lock", err)
		if err != nil {
			h = mustLock(t, m)
		}
		_, err = fencing.Commit(testctx.LateTimer(t, in, lag), e.cli, h.Token(), clientv3.OpPut(e.ns+"x", ""))
		check("Commit", err)
		_, err = lock.Inspect(testctx.LateTimer(t, in, lag), e.cli, e.ns, "lag")
		check("Inspect", err)
		if err := h.Unlock(testctx.LateTimer(t, in, lag)); err != nil {
			check("Unlock", err)
			waitKeys(t, e.cli, e.ns+"mutex/", 0) // the keeper deletes the key Unlock could not
		}
	}
	if failed == 0 {
		t.Fatal("no request failed: the deadlines were never due in flight")
	}
	t.Logf("%d requests failed by their deadline", failed)
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), e.ns+"x"); err != nil {
		t.Fatal(err)
	}
}
