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
// It reads etcd's gauge etcd_debugging_mvcc_slow_watcher_total, of which a
// process has one for all its embedded servers: each server adds and
// removes its own watchers, and also sets the gauge to its own count
// whenever it catches up unsynced watchers. With several servers holding
// watches the value is therefore neither one server's count nor the sum,
// so sample it while only the server under test has watches (no other
// test running watches of its own, on any server of the process). It
// returns an error if the gauge is not registered. It does no I/O and is
// safe for concurrent use.
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
// A failed sample fails tb (with tb.Errorf; the test goes on) and ends the
// sampling. Sampling also stops at tb's cleanup, if stop was not called (a
// test that failed early). stop may be called more than once, and from any
// goroutine; later calls return the same value.
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
