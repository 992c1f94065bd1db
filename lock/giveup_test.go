package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// giveUpBound bounds how long after its context ended a Lock may take to
// return with etcd unreachable: a liveness bound, far above what it takes,
// and far below the cleanup timeout it used to wait for.
const giveUpBound = time.Second

// A Lock whose context ends while etcd is unreachable returns then: the
// removal of its key is left to the lease's keeper, which deletes it once
// etcd answers again, well before the lease (30 s) could expire. Meanwhile
// the key grants nothing, and once etcd is back it blocks nobody. Either
// the enqueue is in flight when the deadline comes (its put may land
// later), or the waiter was enqueued and waiting.
func TestLockGivesUpWhileEtcdUnreachable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		enqueued bool
	}{{"enqueue in flight", false}, {"waiting", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			p := integration.NewProxy(t, integration.Shared(t).Endpoint())
			holder := mustLock(t, e.mutex(e.cli, "unreachable"))
			m := e.mutex(p.Client(t), "unreachable", lock.WithTTL(30*time.Second))
			ctx := ctxT(t, 30*time.Second)
			var (
				err      error
				returned time.Duration
			)
			if tc.enqueued {
				lctx, cancel := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { _, err := m.Lock(lctx); done <- err }()
				waitKeys(t, e.cli, e.ns, 2) // enqueued behind the holder
				p.Pause()
				cancel()
				ended := time.Now()
				err = <-done
				returned = time.Since(ended)
			} else {
				if _, err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) { // the lease is granted
					t.Fatalf("TryLock = %v, want ErrLocked", err)
				}
				p.Pause()
				lctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				_, err = m.Lock(lctx)
				deadline, _ := lctx.Deadline()
				returned = time.Since(deadline)
				cancel()
			}
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Lock = %v, want the context's error", err)
			}
			if returned > giveUpBound {
				t.Errorf("Lock returned %v after its context ended, with etcd unreachable", returned.Round(time.Millisecond))
			}
			p.Unpause()
			// The keeper deletes the key (if the put landed) once etcd
			// answers; the holder's key alone is left.
			integration.WaitKeyCount(t, e.cli, e.ns, 1, 20*time.Second)
			mustUnlock(t, holder)
			// Nothing blocks the next Lock, through the same Mutex or another.
			mustUnlock(t, mustLock(t, m))
			mustUnlock(t, mustLock(t, e.mutex(e.client(), "unreachable")))
			waitKeys(t, e.cli, e.ns, 0)
		})
	}
}
