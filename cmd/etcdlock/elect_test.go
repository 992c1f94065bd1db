//go:build unix

package main

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestElect: of three elect processes one runs its child; when that one's
// etcdlock is killed with SIGKILL its child dies (how soon is logged), and
// another candidate's child starts once the dead leader's lease expires,
// never alongside it.
func TestElect(t *testing.T) {
	e := newE2E(t)
	script := shCheckOthers + shStart + shForever
	procs := map[string]*proc{}
	for _, tag := range []string{"e0", "e1", "e2"} {
		procs[tag] = e.start(tag, "elect", "--ttl", "2s", "leader", "--", "sh", "-c", script)
	}
	e.waitKeys(20*time.Second, "election/", 3)
	e.waitEvents(10*time.Second, "start", 1)
	time.Sleep(300 * time.Millisecond) // room for a second child to start, wrongly
	evs := e.events()
	if n := count(evs, "start"); n != 1 || len(evs) != 1 {
		t.Fatalf("%d children run, want 1:\n%s", n, e.eventText())
	}
	first := evs[0]
	killed := time.Now()
	procs[first.tag].signal(syscall.SIGKILL)
	procs[first.tag].wait(10 * time.Second)
	// A hang detector only: that the child is gone before the next leader's
	// starts is checked by the overlap events below.
	e.waitFor(10*time.Second, "the killed leader's child to die", func() bool { return !alive(first.pid) })
	t.Logf("the killed leader's child died %v after the SIGKILL", time.Since(killed))
	evs = e.waitEvents(15*time.Second, "start", 2)
	var second event
	for _, ev := range evs {
		if ev.kind == "start" && ev.tag != first.tag {
			second = ev
		}
	}
	if second.tag == "" || count(evs, "overlap") != 0 {
		t.Fatalf("want a second leader's child after the first's died:\n%s", e.eventText())
	}
	// Room for the third candidate's child to start, wrongly, alongside the
	// second leader's: an event that must not happen cannot be waited for.
	time.Sleep(200 * time.Millisecond)
	if n := count(e.events(), "start"); n != 2 {
		t.Fatalf("%d children started, want 2:\n%s", n, e.eventText())
	}
	// SIGTERM: the leader forwards it (its child dies by it: 143); the
	// candidate stops campaigning (143 too).
	for tag, p := range procs {
		if tag != first.tag {
			p.signal(syscall.SIGTERM)
		}
	}
	for tag, p := range procs {
		if tag != first.tag {
			p.expect(128+int(syscall.SIGTERM), 10*time.Second)
		}
	}
	if alive(second.pid) {
		t.Errorf("the second leader's child is still running")
	}
	e.requireEmpty()
}

// TestElectExitStatus: when the child exits, elect resigns at once (the
// next candidate leads without waiting for a TTL) and exits with the
// child's status.
func TestElectExitStatus(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	a := e.start("a", "elect", "--value", "first", "leader", "--", "sh", "-c", shStart+shGate+"exit 5")
	e.waitEvents(10*time.Second, "start", 1)
	b := e.start("b", "elect", "leader", "--", "sh", "-c", shStart+"exit 0")
	e.waitKeys(10*time.Second, "election/", 2)
	e.openGate()
	a.expect(5, 10*time.Second)
	b.expect(0, 5*time.Second) // well within the 10s TTL: a resigned
	e.requireEmpty()
}

// TestElectLost: when the leader's lease is revoked, its child gets
// SIGTERM, and elect campaigns again and runs a new child in a new term.
func TestElectLost(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	a := e.start("a", "elect", "--ttl", "5s", "leader", "--", "sh", "-c",
		`trap 'echo "term $TAG $$" >> "$LOG"; exit 143' TERM; `+shStart+shForever)
	evs := e.waitEvents(10*time.Second, "start", 1)
	lease := e.leaseOf("election/")
	if f := strings.Fields(evs[0].more); len(f) != 2 || f[1] != leaseHex(lease) {
		t.Errorf("child's token and lease = %q, want lease %s", evs[0].more, leaseHex(lease))
	}
	e.revoke(lease)
	evs = e.waitEvents(10*time.Second, "start", 2)
	if count(evs, "term") != 1 || evs[1].kind != "term" || evs[2].kind != "start" {
		t.Fatalf("want start, term, start:\n%s", e.eventText())
	}
	f1, f2 := strings.Fields(evs[0].more), strings.Fields(evs[2].more)
	if len(f1) != 2 || len(f2) != 2 {
		t.Fatalf("want a token and a lease in each start event:\n%s", e.eventText())
	}
	tok1, err1 := strconv.ParseInt(f1[0], 10, 64)
	tok2, err2 := strconv.ParseInt(f2[0], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("tokens %q and %q: %v, %v", f1[0], f2[0], err1, err2)
	}
	if tok2 <= tok1 || f2[1] == f1[1] {
		t.Errorf("second term %q, want a larger token and a new lease than %q", evs[2].more, evs[0].more)
	}
	if msg := a.errText(); !strings.Contains(msg, "lost while CMD ran") || !strings.Contains(msg, "campaigning again") {
		t.Errorf("stderr = %q, want the loss reported", msg)
	}
	a.signal(syscall.SIGTERM)
	a.expect(128+int(syscall.SIGTERM), 10*time.Second)
	e.requireEmpty()
}
