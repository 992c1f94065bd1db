package queue

import (
	"sync"
	"time"
)

// delayer starts the own-key monitors of a Primitive's holds admitted at
// once, ownWatchDelay after each grant, on one timer for all of them. A
// timer per hold cost every short hold a timer start and stop, and, in a
// client process with few timers, a wake-up of the network poller (a write
// to its eventfd and a thread woken) each time the new timer was the
// earliest. The zero delayer is ready; it is safe for concurrent use.
type delayer struct {
	mu      sync.Mutex
	pending []*Hold // in order of due time
	timer   *time.Timer
	armed   bool // timer set to fire for pending[0]
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

// fire starts the monitors that are due, and sets the timer for the next.
// Holds released meanwhile are skipped. A timer left set when the
// Primitive closes fires and finds nothing to start (Close has released
// every hold), or starts the monitor of a hold lost before it was
// registered, which ends it at once.
func (d *delayer) fire() {
	now := time.Now()
	d.mu.Lock()
	n := 0
	for n < len(d.pending) && !d.pending[n].due.After(now) {
		n++
	}
	due := make([]*Hold, n)
	copy(due, d.pending)
	rest := copy(d.pending, d.pending[n:])
	clear(d.pending[rest:])
	d.pending = d.pending[:rest]
	if len(d.pending) > 0 {
		d.timer.Reset(time.Until(d.pending[0].due))
	} else {
		d.armed = false
	}
	d.mu.Unlock()
	for _, h := range due {
		h.startDelayed()
	}
}
