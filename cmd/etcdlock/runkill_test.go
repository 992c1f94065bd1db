//go:build unix

package main

import (
	"syscall"
	"testing"
	"time"
)

// TestRunKilled: when the etcdlock running CMD under a lock is killed with
// SIGKILL, so that nothing of it can release the lock or stop CMD in the
// usual way, CMD still dies (its guard kills the group), and the next
// waiter's CMD starts only after, once the dead holder's lease expires.
func TestRunKilled(t *testing.T) {
	e := newE2E(t)
	script := shCheckOthers + shStart + shForever
	a := e.start("A", "run", "--ttl", "2s", "job", "--", "sh", "-c", script)
	e.waitEvents(10*time.Second, "start", 1)
	b := e.start("B", "run", "--ttl", "2s", "job", "--", "sh", "-c", script)
	e.waitKeys(10*time.Second, "mutex/", 2) // B waits behind A
	first := e.events()[0]
	if first.tag != "A" {
		t.Fatalf("first child is %s's, want A's:\n%s", first.tag, e.eventText())
	}
	killed := time.Now()
	a.signal(syscall.SIGKILL)
	a.wait(10 * time.Second)
	// A hang detector only: that A's child is gone before B's starts is
	// checked by B's child itself (an "overlap" event).
	e.waitFor(10*time.Second, "the killed holder's child to die", func() bool { return !alive(first.pid) })
	t.Logf("the killed holder's child died %v after the SIGKILL", time.Since(killed))
	evs := e.waitEvents(15*time.Second, "start", 2)
	if evs[1].tag != "B" || count(evs, "overlap") != 0 {
		t.Fatalf("want B's child after A's died, alone:\n%s", e.eventText())
	}
	b.signal(syscall.SIGTERM) // forwarded: B's child dies by it, B exits 143
	b.expect(128+int(syscall.SIGTERM), 10*time.Second)
	if alive(evs[1].pid) {
		t.Errorf("B's child is still running")
	}
	e.requireEmpty()
}

// TestElectStopThenLost: SIGTERM reaches the leader's CMD, which takes its
// time to exit; leadership is lost meanwhile. elect must still stop, with
// CMD's status, not campaign again and start CMD anew.
func TestElectStopThenLost(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	// On SIGTERM, log it and wait for the gate before exiting 7.
	script := `trap 'echo "term $TAG $$" >> "$LOG"; ` + shGate + `exit 7' TERM; ` + shStart + shForever
	a := e.start("A", "elect", "--ttl", "5s", "leader", "--", "sh", "-c", script)
	e.waitEvents(10*time.Second, "start", 1)
	a.signal(syscall.SIGTERM)
	e.waitEvents(10*time.Second, "term", 1)
	e.revoke(e.leaseOf("election/")) // lost while CMD is stopping
	// CMD's grace is 500ms (a tenth of --ttl): SIGKILL ends it, or the gate.
	e.openGate()
	code := a.wait(15 * time.Second)
	if code != 7 && code != 128+int(syscall.SIGKILL) {
		t.Errorf("elect exited %d, want CMD's status (7, or 137 if the grace ran out first)\nstderr: %s", code, a.errText())
	}
	if n := count(e.events(), "start"); n != 1 {
		t.Errorf("CMD started %d times, want once:\n%s", n, e.eventText())
	}
	e.requireEmpty()
}
