package queue

import (
	"testing"
	"time"
)

// A Primitive locked and unlocked in a loop adds a hold to its delayer at
// every cycle and releases it long before ownWatchDelay: the timer must
// not fire once per cycle (a goroutine and a wake-up each time), but about
// once per ownWatchDelay, and end unarmed with nothing pending once every
// hold is released.
func TestDelayerSkipsReleasedHolds(t *testing.T) {
	var d delayer
	d.start = func(*Hold) {} // no monitor to start: these holds have no queue
	const cycles = 100
	t0 := time.Now()
	for range cycles {
		h := &Hold{due: time.Now().Add(ownWatchDelay), delayed: true}
		d.add(h)
		time.Sleep(time.Millisecond) // the hold, then its release
		h.mu.Lock()
		h.delayed = false
		h.mu.Unlock()
	}
	// The timer fires for the last holds' due times at the latest, and
	// then has nothing left to wait for.
	limit := time.Now().Add(10 * time.Second)
	for {
		d.mu.Lock()
		fired, pending, armed := d.fired, len(d.pending), d.armed
		d.mu.Unlock()
		if !armed {
			if pending != 0 {
				t.Errorf("%d holds pending with the timer unarmed", pending)
			}
			// One hold is live at a time, so of three firings in a row
			// the third comes over ownWatchDelay after the first: at
			// most two per ownWatchDelay. Setting the timer for the next
			// hold in line, released or not, fires once per cycle.
			elapsed := time.Since(t0)
			if most := 2*int(elapsed/ownWatchDelay) + 2; fired > most {
				t.Errorf("timer fired %d times for %d holds in %v, want at most %d", fired, cycles, elapsed, most)
			}
			return
		}
		if time.Now().After(limit) {
			t.Fatalf("timer still armed with %d holds pending, 10 s after the last release", pending)
		}
		time.Sleep(ownWatchDelay / 4)
	}
}

// A hold still live when its due time comes has its monitor started then,
// however many released holds came before it.
func TestDelayerStartsLiveHolds(t *testing.T) {
	var d delayer
	holds := make([]*Hold, 10)
	for i := range holds {
		holds[i] = &Hold{delayed: true}
	}
	live := holds[5] // never released
	started := make(chan time.Time, 1)
	d.start = func(h *Hold) {
		if h == live {
			started <- time.Now()
		}
	}
	for _, h := range holds {
		h.due = time.Now().Add(ownWatchDelay)
		d.add(h)
		if h != live {
			h.mu.Lock()
			h.delayed = false
			h.mu.Unlock()
		}
	}
	select {
	case at := <-started:
		if at.Before(live.due) {
			t.Errorf("live hold's monitor started %v before its due time", live.due.Sub(at))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("live hold's monitor not started 10 s after its due time")
	}
}
