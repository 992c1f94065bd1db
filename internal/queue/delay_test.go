package queue

import (
	"sync"
	"testing"
	"time"
)

// A Primitive locked and unlocked in a loop adds a hold to its delayer at
// every cycle and releases it long before ownWatchDelay: the timer must
// not fire once per cycle (a goroutine and a wake-up each time), but about
// once per ownWatchDelay, and start no released hold's monitor.
func TestDelayerSkipsReleasedHolds(t *testing.T) {
	var (
		d       delayer
		mu      sync.Mutex
		started []*Hold
	)
	d.start = func(h *Hold) {
		if h.isDelayed() {
			mu.Lock()
			started = append(started, h)
			mu.Unlock()
		}
	}
	const cycles = 100
	t0 := time.Now()
	var holds []*Hold
	for range cycles {
		h := &Hold{due: time.Now().Add(ownWatchDelay), delayed: true}
		holds = append(holds, h)
		d.add(h)
		time.Sleep(time.Millisecond) // the hold, then its release
		h.mu.Lock()
		h.delayed = false
		h.mu.Unlock()
	}
	// The last hold's due time is the latest any firing can come.
	time.Sleep(time.Until(holds[cycles-1].due) + 5*time.Millisecond)
	elapsed := time.Since(t0)
	d.mu.Lock()
	fired, pending, armed := d.fired, len(d.pending), d.armed
	d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
	// Between two firings lies at least ownWatchDelay but for the one that
	// starts a hold kept live through the one before: at most two firings
	// per ownWatchDelay. Setting the timer for the next hold in line,
	// released or not, fires about once per cycle.
	if limit := 2*int(elapsed/ownWatchDelay) + 2; fired > limit || fired >= cycles/2 {
		t.Errorf("timer fired %d times for %d holds in %v, want at most %d", fired, cycles, elapsed, limit)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range started {
		t.Errorf("monitor of a released hold (due %v) started", h.due)
	}
	if pending != 0 || armed {
		t.Errorf("%d holds pending, armed %v; want none, unarmed", pending, armed)
	}
}
