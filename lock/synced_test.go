package lock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/lock"
)

// unsyncedWatchers returns the embedded server's count of unsynced
// watchers: those started at a revision it had already passed.
func unsyncedWatchers(t *testing.T) float64 {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Error(err)
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_debugging_mvcc_slow_watcher_total" && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Error("the server exports no etcd_debugging_mvcc_slow_watcher_total")
	return 0
}

// sampler watches the unsynced-watcher gauge until stopped and reports the
// most it saw.
type sampler struct {
	most atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

func sample(t *testing.T) *sampler {
	s := &sampler{stop: make(chan struct{})}
	s.wg.Go(func() {
		for {
			if n := int64(unsyncedWatchers(t)); n > s.most.Load() {
				s.most.Store(n)
			}
			select {
			case <-s.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	return s
}

func (s *sampler) end() int64 {
	close(s.stop)
	s.wg.Wait()
	return s.most.Load()
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
	// catch-up, tens of milliseconds.
	s := sample(t)
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
	if most := s.end(); most < 1 {
		t.Fatalf("the sampler saw no unsynced watcher for a watch from a past revision")
	}
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), e.ns+"probe"); err != nil {
		t.Fatal(err)
	}
	// Let the probe's watcher go before sampling again.
	for deadline := time.Now().Add(10 * time.Second); unsyncedWatchers(t) != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the probe's watcher never went")
		}
		time.Sleep(5 * time.Millisecond)
	}

	s = sample(t)
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
	if most := s.end(); most != 0 {
		t.Errorf("the server had %d unsynced watchers during the handoffs: a watch started at a past revision", most)
	}
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), e.ns+"noise"); err != nil {
		t.Fatal(err)
	}
}
