package lock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// A Lock whose context's deadline comes while a request is at the server
// returns the context's error (context.DeadlineExceeded), not etcd's
// "request timed out": the server times the request out by the deadline
// the client sent, which can pass a moment before the client's own.
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
