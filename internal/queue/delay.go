package queue

import (
	"sync"
	"time"
)

// holdDelays is the delayer of every Primitive in the process.
var holdDelays delayer

// delayer starts the own-key monitors of holds admitted at once,
// ownWatchDelay after each grant, on one timer for all of them. A
// timer per hold cost every short hold a timer start and stop, and, in a
// client process with few timers, a wake-up of the network poller (a write
// to its eventfd and a thread woken) each time the new timer was the
// earliest. The zero delayer is ready; it is safe for concurrent use.
type delayer struct {
	mu      sync.Mutex
	pending []*Hold // in order of due time
	timer   *time.Timer
	armed   bool // timer set to fire for pending[0], or fire running (it re-arms)
	fired   int  // times the timer fired (for tests)
	// start starts a due hold's monitor: Hold.startDelayed, unless a test
	// sets another.
	start func(*Hold)
}

// add has h's monitor started at h.due, unless Release comes first (see
// Hold.startDelayed).
func (d *delayer) add(h *Hold) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending = append(d.pending, h)
	if d.armed {
		return // due no earlier than those before it
	}
	d.armed = true
	wait := time.Until(h.due)
	if d.timer == nil {
		d.timer = time.AfterFunc(wait, d.fire)
	} else {
		d.timer.Reset(wait)
	}
}

// fire starts the monitors that are due, drops the holds released
// meanwhile, and sets the timer for the first hold left. Dropping released
// holds matters to a Primitive locked and unlocked in a loop: were the
// timer set for the next hold in line, released or not, it would fire once
// per cycle (each firing a goroutine and a wake-up); set for the first live
// one, it fires at most twice per ownWatchDelay. A timer left set when the
// Primitive closes fires and finds nothing to start (Close has released
// every hold), or starts the monitor of a hold lost before it was
// registered, which ends it at once.
func (d *delayer) fire() {
	now := time.Now()
	var due []*Hold
	d.mu.Lock()
	d.fired++
	start := d.start
	kept := d.pending[:0]
	for _, h := range d.pending {
		switch {
		case !h.due.After(now):
			due = append(due, h)
		case h.isDelayed():
			kept = append(kept, h)
		}
	}
	clear(d.pending[len(kept):])
	d.pending = kept
	if len(d.pending) > 0 {
		d.timer.Reset(time.Until(d.pending[0].due))
	} else {
		d.armed = false
	}
	d.mu.Unlock()
	for _, h := range due {
		if start != nil {
			start(h)
		} else {
			h.startDelayed()
		}
	}
}
