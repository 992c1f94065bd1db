package integration

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// unsyncedMetric is the embedded server's gauge of unsynced watchers.
const unsyncedMetric = "etcd_debugging_mvcc_slow_watcher_total"

// UnsyncedWatchers returns how many watchers the servers embedded in this
// process have that are "unsynced": started at a revision the server had
// already passed, or fallen behind. etcd catches those up only every
// 100 ms, so a watch that a waiter opens one revision too late delays its
// wake-up by up to that much (what stalls etcd's concurrency.Mutex at each
// contended handoff). Sampled while code under test waits and hands off, it
// should stay at zero.
//
// The count covers every embedded server of the process (etcd's metrics are
// process-wide), so sample it while no other test runs watches of its own.
// It does no I/O and is safe for concurrent use.
func UnsyncedWatchers() (int, error) {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() == unsyncedMetric && len(mf.GetMetric()) > 0 {
			return int(mf.GetMetric()[0].GetGauge().GetValue()), nil
		}
	}
	return 0, errors.New("integration: the embedded etcd exports no " + unsyncedMetric + " metric")
}

// SampleUnsyncedWatchers samples [UnsyncedWatchers] every 2 ms, on a
// goroutine, until the returned stop is called; stop waits for the
// goroutine and returns the most it saw. A watcher is unsynced for up to
// 100 ms, so sampling catches one with high probability, not certainty.
// A failed sample fails tb (with tb.Errorf; the test goes on). Sampling also
// stops at tb's cleanup, if stop was not called (a test that failed early).
func SampleUnsyncedWatchers(tb testing.TB) (stop func() int) {
	var (
		most int
		done = make(chan struct{})
		wg   sync.WaitGroup
		once sync.Once
	)
	wg.Go(func() {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			n, err := UnsyncedWatchers()
			if err != nil {
				tb.Errorf("%v", err)
				return
			}
			most = max(most, n)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	stop = func() int {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
		return most
	}
	tb.Cleanup(func() { stop() })
	return stop
}
