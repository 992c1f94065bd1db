package lock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// unsyncedWatchers returns the embedded server's count of unsynced
// watchers: those started at a revision it had already passed.
func unsyncedWatchers(t *testing.T) int {
	n, err := integration.UnsyncedWatchers()
	if err != nil {
		t.Error(err)
	}
	return n
}

// TestWatchesStartSynced: no watch the locks open starts at a revision the
// server has passed. etcd catches such an "unsynced" watcher up only every
// 100 ms, which is what stalls etcd's concurrency.Mutex at each contended
// handoff; the bench's contended rows measure the difference, and this
// test checks its cause without timing anything. Contenders on a Mutex, an
// RWMutex and a Semaphore hand off many times while unrelated writes move
// the revision on (the relock trap), and the server's gauge of unsynced
// watchers must stay at zero. The test first shows that it sees an
// unsynced watcher when there is one.
func TestWatchesStartSynced(t *testing.T) {
	e := newEnv(t)
	if n := unsyncedWatchers(t); n != 0 {
		t.Skipf("%v unsynced watchers before the test: another test's", n)
	}

	// The probe: a watch from a past revision is unsynced until etcd's next
	// catch-up, which may come at once or 100 ms later: try a few times.
	seen := false
	for try := 0; try < 10 && !seen; try++ {
		stop := integration.SampleUnsyncedWatchers(t)
		resp, err := e.cli.Put(ctxT(t, 5*time.Second), e.ns+"probe", "x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Put(ctxT(t, 5*time.Second), e.ns+"probe", "y"); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(ctxT(t, 10*time.Second))
		wch := e.cli.Watch(wctx, e.ns+"probe", clientv3.WithRev(resp.Header.Revision))
		<-wch // its first event comes only once it is caught up
		wcancel()
		seen = stop() > 0
	}
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), e.ns+"probe"); err != nil {
		t.Fatal(err)
	}
	if !seen {
		t.Fatal("the sampler never saw the unsynced watcher of a watch from a past revision")
	}
	// Let the probe's watchers go before sampling again.
	for deadline := time.Now().Add(10 * time.Second); unsyncedWatchers(t) != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the probe's watcher never went")
		}
		time.Sleep(5 * time.Millisecond)
	}

	stop := integration.SampleUnsyncedWatchers(t)
	stopNoise := make(chan struct{})
	var noise sync.WaitGroup
	noise.Go(func() { // unrelated writes, so that the revision keeps moving
		for i := 0; ; i++ {
			select {
			case <-stopNoise:
				return
			default:
			}
			if _, err := e.cli.Put(context.Background(), e.ns+"noise", "x"); err != nil {
				return
			}
		}
	})
	type acquirer func(ctx context.Context) (*lock.Hold, error)
	var kinds [][]acquirer
	var ms []acquirer
	for range 4 {
		ms = append(ms, e.mutex(e.client(), "m").Lock)
	}
	kinds = append(kinds, ms)
	var rws []acquirer
	for i := range 4 {
		rw, err := lock.NewRWMutex(e.client(), "rw", lock.WithNamespace(e.ns), lock.WithTTL(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rw.Close() })
		if i%2 == 0 {
			rws = append(rws, rw.Lock)
		} else {
			rws = append(rws, rw.RLock)
		}
	}
	kinds = append(kinds, rws)
	var sems []acquirer
	for range 4 {
		sem, err := lock.NewSemaphore(e.client(), "sem", 2, lock.WithNamespace(e.ns), lock.WithTTL(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sem.Close() })
		sems = append(sems, func(ctx context.Context) (*lock.Hold, error) { return sem.Acquire(ctx, 1) })
	}
	kinds = append(kinds, sems)
	var wg sync.WaitGroup
	for _, acqs := range kinds {
		for _, acq := range acqs {
			wg.Go(func() {
				for range 30 {
					h, err := acq(ctxT(t, 30*time.Second))
					if err != nil {
						t.Errorf("acquire: %v", err)
						return
					}
					if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
						t.Errorf("unlock: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(stopNoise)
	noise.Wait()
	if most := stop(); most != 0 {
		t.Errorf("the server had %d unsynced watchers during the handoffs: a watch started at a past revision", most)
	}
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), e.ns+"noise"); err != nil {
		t.Fatal(err)
	}
}
