//go:build unix

package main

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
)

// overlaps checks the start and end events of the children: every tag
// whose kind tagKind says "writer" must be alone; readers may overlap one
// another but never a writer; and no more than max children may run at
// once. It returns the most that ran at once.
func overlaps(t *testing.T, evs []event, writer func(tag string) bool, limit int) int {
	t.Helper()
	active := make(map[string]bool)
	most := 0
	for _, ev := range evs {
		switch ev.kind {
		case "start":
			for other := range active {
				if writer(ev.tag) || writer(other) {
					t.Errorf("%s started while %s ran", ev.tag, other)
				}
			}
			active[ev.tag] = true
			most = max(most, len(active))
			if len(active) > limit {
				t.Errorf("%d children at once, at most %d allowed: %v", len(active), limit, active)
			}
		case "end":
			if !active[ev.tag] {
				t.Errorf("%s ended without a start", ev.tag)
			}
			delete(active, ev.tag)
		}
	}
	return most
}

func always(string) bool { return true }

// TestRunExclusive: 8 concurrent runs of one lock never overlap, each
// child gets a token larger than its predecessor's, and no key is left.
func TestRunExclusive(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	const n = 8
	procs := make([]*proc, n)
	for i := range procs {
		procs[i] = e.start("w"+strconv.Itoa(i), "run", "cs", "--", "sh", "-c", shStart+"sleep 0.05; "+shEnd)
	}
	for _, p := range procs {
		p.expect(0, 30*time.Second)
	}
	evs := e.events()
	if got := count(evs, "start"); got != n {
		t.Fatalf("%d children started, want %d:\n%s", got, n, e.eventText())
	}
	overlaps(t, evs, always, 1)
	last := int64(0)
	for _, ev := range evs {
		if ev.kind != "start" {
			continue
		}
		tok, err := strconv.ParseInt(strings.Fields(ev.more)[0], 10, 64)
		if err != nil || tok <= last {
			t.Errorf("%s got token %q after token %d: tokens must grow", ev.tag, ev.more, last)
		}
		last = tok
	}
	e.requireEmpty()
}

// TestRunShared: --shared readers hold together, never with a writer, and
// a reader that came after a waiting writer waits for it.
func TestRunShared(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	isWriter := func(tag string) bool { return strings.HasPrefix(tag, "W") }
	w0 := e.start("W0", "run", "--write", "rw", "--", "sh", "-c", shStart+shGate+shEnd)
	e.waitEvents(10*time.Second, "start", 1)
	// Queue, in this order: R1, R2, W1, R3.
	r1 := e.start("R1", "run", "--shared", "rw", "--", "sh", "-c", shStart+"sleep 0.3; "+shEnd)
	e.waitKeys(10*time.Second, "rw/", 2)
	r2 := e.start("R2", "run", "rw", "--shared", "--", "sh", "-c", shStart+"sleep 0.3; "+shEnd)
	e.waitKeys(10*time.Second, "rw/", 3)
	w1 := e.start("W1", "run", "rw", "--write", "--", "sh", "-c", shStart+"sleep 0.1; "+shEnd)
	e.waitKeys(10*time.Second, "rw/", 4)
	r3 := e.start("R3", "run", "--shared", "rw", "--", "sh", "-c", shStart+"sleep 0.1; "+shEnd)
	e.waitKeys(10*time.Second, "rw/", 5)
	if got := count(e.events(), "start"); got != 1 {
		t.Fatalf("%d children started while the writer W0 held the lock, want 1:\n%s", got, e.eventText())
	}
	e.openGate()
	for _, p := range []*proc{w0, r1, r2, w1, r3} {
		p.expect(0, 20*time.Second)
	}
	evs := e.events()
	if most := overlaps(t, evs, isWriter, 5); most < 2 {
		t.Errorf("readers R1 and R2 never held together:\n%s", e.eventText())
	}
	order := make(map[string]int)
	for i, ev := range evs {
		order[ev.kind+" "+ev.tag] = i
	}
	if order["start W1"] < order["end R1"] || order["start W1"] < order["end R2"] || order["start R3"] < order["end W1"] {
		t.Errorf("want R1 and R2, then W1, then R3:\n%s", e.eventText())
	}
	e.requireEmpty()
}

// TestRunSemaphore: with -n 3, three of eight runs hold at once, never more.
func TestRunSemaphore(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	const n = 8
	procs := make([]*proc, n)
	for i := range procs {
		procs[i] = e.start("s"+strconv.Itoa(i), "run", "-n", "3", "pool", "--", "sh", "-c", shStart+shGate+"sleep 0.02; "+shEnd)
	}
	e.waitKeys(20*time.Second, "sem/", n)
	e.waitEvents(10*time.Second, "start", 3)
	time.Sleep(200 * time.Millisecond) // room for a fourth to start, wrongly
	if got := count(e.events(), "start"); got != 3 {
		t.Fatalf("%d children hold permits of 3:\n%s", got, e.eventText())
	}
	e.openGate()
	for _, p := range procs {
		p.expect(0, 20*time.Second)
	}
	evs := e.events()
	if got := count(evs, "start"); got != n {
		t.Fatalf("%d children started, want %d", got, n)
	}
	if most := overlaps(t, evs, func(string) bool { return false }, 3); most != 3 {
		t.Errorf("at most %d children at once, want 3", most)
	}
	e.requireEmpty()
}

// leaseOf returns the lease of the oldest key under the namespace plus
// rest.
func (e *e2eEnv) leaseOf(rest string) clientv3.LeaseID {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.ns+rest, clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		e.t.Fatalf("no key under %s%s: %v", e.ns, rest, err)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

// revoke revokes lease, as an operator with etcdctl would.
func (e *e2eEnv) revoke(lease clientv3.LeaseID) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.cli.Revoke(ctx, lease); err != nil {
		e.t.Fatal(err)
	}
}

// TestRunLostRevoked: when another client revokes the holder's lease, the
// child gets SIGTERM, the holder's etcdlock exits 121, and the next run
// gets the lock.
func TestRunLostRevoked(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	a := e.start("A", "run", "--ttl", "5s", "job", "--", "sh", "-c",
		`trap 'echo "term $TAG $$" >> "$LOG"; exit 143' TERM; `+shStart+shForever)
	e.waitEvents(10*time.Second, "start", 1)
	b := e.start("B", "run", "job", "--", "sh", "-c", shCheckOthers+shStart+shEnd)
	e.waitKeys(10*time.Second, "mutex/", 2)
	e.revoke(e.leaseOf("mutex/"))
	a.expect(exitLost, 10*time.Second)
	b.expect(0, 10*time.Second)
	evs := e.events()
	if count(evs, "term") != 1 {
		t.Errorf("want A's child to get SIGTERM:\n%s", e.eventText())
	}
	// A revoke hands the lock on at the server at once, so B's child may
	// start while A's is still handling its SIGTERM (the help says so); only
	// a holder cut off from etcd stops its child before the lock moves on
	// (TestRunLostPartitioned).
	if count(evs, "overlap") != 0 {
		t.Logf("B's child started while A's was still running, as a revoke allows:\n%s", e.eventText())
	}
	if msg := a.errText(); !strings.Contains(msg, "lost while CMD ran") || strings.Count(msg, "etcdlock run:") != 1 {
		t.Errorf("A's stderr = %q, want one line saying the lock was lost", msg)
	}
	e.requireEmpty()
}

// TestRunLostKillsIgnoringChild: a child that ignores SIGTERM is killed
// with SIGKILL once the grace period passes, its own children too.
func TestRunLostKillsIgnoringChild(t *testing.T) {
	e := newE2E(t)
	// --ttl 2s: margin 400ms, default grace 200ms.
	a := e.start("A", "run", "--ttl", "2s", "job", "--", "sh", "-c",
		`trap '' TERM; `+shStart+`sleep 1000 & echo "bg $TAG $!" >> "$LOG"; `+shForever)
	evs := e.waitEvents(10*time.Second, "bg", 1)
	revoked := time.Now()
	e.revoke(e.leaseOf("mutex/"))
	a.expect(exitLost, 10*time.Second)
	took := time.Since(revoked)
	t.Logf("A exited %v after the revoke", took)
	if took < 200*time.Millisecond {
		t.Errorf("A exited %v after the revoke, before the 200ms grace had passed", took)
	}
	for _, ev := range evs {
		if alive(ev.pid) {
			t.Errorf("%s process %d (%s) still alive", ev.tag, ev.pid, ev.kind)
		}
	}
	if msg := a.errText(); !strings.Contains(msg, "SIGKILL 200ms later") {
		t.Errorf("A's stderr = %q, want it to say SIGKILL was sent", msg)
	}
	e.requireEmpty()
}

// TestRunLostPartitioned: a holder cut off from etcd stops its child (one
// that ignores SIGTERM, so SIGKILL is needed) before etcd expires its
// lease, so the next holder's child never runs alongside it. This is the
// case the grace period is chosen for.
func TestRunLostPartitioned(t *testing.T) {
	e := newE2E(t)
	px, err := integration.StartProxy(e.srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	a := e.start("A", "run", "--ttl", "2s", "--endpoints", px.Endpoint(), "job", "--", "sh", "-c",
		`trap '' TERM; `+shStart+`sleep 1000 & echo "bg $TAG $!" >> "$LOG"; `+shForever)
	e.waitEvents(10*time.Second, "bg", 1)
	b := e.start("B", "run", "job", "--", "sh", "-c", shCheckOthers+shStart+shEnd)
	e.waitKeys(10*time.Second, "mutex/", 2)
	px.Blackhole()
	e.waitEvents(15*time.Second, "start", 2)
	px.Unblackhole() // let A release what it can and exit
	b.expect(0, 10*time.Second)
	a.expect(exitLost, 20*time.Second)
	if n := count(e.events(), "overlap"); n != 0 {
		t.Errorf("B's child started while A's processes ran:\n%s", e.eventText())
	}
	if msg := a.errText(); !strings.Contains(msg, "no lease renewal") {
		t.Errorf("A's stderr = %q, want the loss by deadline", msg)
	}
	e.requireEmpty()
}

// TestRunExitStatus: run exits with the child's status, 128+N when a signal
// killed it, and forwards signals.
func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	e.start("x", "run", "st", "--", "sh", "-c", "exit 7").expect(7, 10*time.Second)
	e.start("x", "run", "st", "--", "sh", "-c", "kill -USR1 $$").expect(128+int(syscall.SIGUSR1), 10*time.Second)
	e.start("x", "run", "st", "--", "false").expect(1, 10*time.Second)

	// SIGINT to etcdlock reaches the child, whose status etcdlock exits with.
	p := e.start("x", "run", "st", "--", "sh", "-c",
		`trap 'echo "int $TAG $$" >> "$LOG"; exit 9' INT; `+shStart+shForever)
	e.waitEvents(10*time.Second, "start", 1)
	p.signal(syscall.SIGINT)
	p.expect(9, 10*time.Second)
	if count(e.events(), "int") != 1 {
		t.Errorf("the child did not get SIGINT:\n%s", e.eventText())
	}
	e.requireEmpty()
}

// TestRunTimeout: a run that cannot acquire within --timeout exits 124
// with one line on stderr and leaves no key; one interrupted while waiting
// exits 128+N.
func TestRunTimeout(t *testing.T) {
	e := newE2E(t)
	holder := e.start("h", "run", "busy", "--", "sh", "-c", shStart+shGate)
	e.waitEvents(10*time.Second, "start", 1)
	start := time.Now()
	p := e.start("t", "run", "--timeout", "300ms", "busy", "--", "sh", "-c", shStart)
	p.expect(exitTimeout, 10*time.Second)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("timed out after %v, before --timeout", took)
	}
	msg := p.errText()
	if !strings.Contains(msg, "not acquired within 300ms") || strings.Count(msg, "\n") != 1 {
		t.Errorf("stderr = %q, want one line about the timeout", msg)
	}
	if n := e.keys("mutex/"); n != 1 {
		t.Errorf("%d keys, want only the holder's", n)
	}
	// --timeout 0 tries once, as TryLock.
	p = e.start("z", "run", "--timeout", "0", "busy", "--", "sh", "-c", shStart)
	p.expect(exitTimeout, 10*time.Second)
	if msg := p.errText(); !strings.Contains(msg, `lock "busy" not acquired (--timeout 0 tries once); held by`) || strings.Count(msg, "\n") != 1 {
		t.Errorf("stderr = %q, want one line saying the one try failed", msg)
	}
	if n := e.keys("mutex/"); n != 1 {
		t.Errorf("%d keys after --timeout 0, want only the holder's", n)
	}

	w := e.start("i", "run", "busy", "--", "sh", "-c", shStart)
	e.waitKeys(10*time.Second, "mutex/", 2)
	w.signal(syscall.SIGTERM)
	w.expect(128+int(syscall.SIGTERM), 10*time.Second)
	if msg := w.errText(); !strings.Contains(msg, "interrupted by SIGTERM while waiting") {
		t.Errorf("stderr = %q, want it to say the wait was interrupted", msg)
	}
	if n := e.keys("mutex/"); n != 1 {
		t.Errorf("%d keys after the interrupted wait, want only the holder's", n)
	}
	e.openGate()
	holder.expect(0, 10*time.Second)
	if got := count(e.events(), "start"); got != 1 {
		t.Errorf("%d children ran, want only the holder's", got)
	}
	// On a free lock, --timeout 0 gets it; --ttl in whole seconds, as
	// etcdctl's.
	e.start("f", "run", "--timeout", "0", "--ttl", "2", "busy", "--", "sh", "-c", shStart).expect(0, 10*time.Second)
	if got := count(e.events(), "start"); got != 2 {
		t.Errorf("%d children ran, want the holder's and the one of --timeout 0", got)
	}
	e.requireEmpty()
}

// TestUnreachable: every command that talks to etcd exits 120, with one
// line on stderr that says why, when etcd cannot be reached.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	for _, args := range [][]string{
		{"run", "x", "--", "true"},
		{"elect", "x", "--", "true"},
		{"status", "x"},
		{"observe", "x"},
	} {
		args = append([]string{args[0], "--endpoints", "127.0.0.1:1", "--dial-timeout", "300ms"}, args[1:]...)
		p := e.start("u", args...)
		p.expect(exitUnreachable, 10*time.Second)
		if msg := p.errText(); !strings.Contains(msg, "cannot reach etcd at 127.0.0.1:1 within 300ms: connection refused") || strings.Count(msg, "\n") != 1 {
			t.Errorf("etcdlock %s: stderr = %q, want one line saying etcd is unreachable", args[0], msg)
		}
	}
	if got := count(e.events(), "start"); got != 0 {
		t.Errorf("%d children ran", got)
	}
}

// TestRunUsage checks the usage errors of run and elect, in-process: they
// need no etcd.
func TestRunUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		err  string // in stderr
	}{
		{[]string{"run"}, exitUsage, "missing NAME"},
		{[]string{"run", "x"}, exitUsage, "missing CMD"},
		{[]string{"run", "x", "--"}, exitUsage, "missing CMD"},
		{[]string{"run", "--shared", "-n", "2", "x", "true"}, exitUsage, "do not go together"},
		{[]string{"run", "-n", "-1", "x", "true"}, exitUsage, "-n must be"},
		{[]string{"run", "--ttl", "1500ms", "x", "true"}, exitUsage, "whole number of seconds"},
		{[]string{"run", "--ttl", "10s", "--grace", "2s", "x", "true"}, exitUsage, "not less than the safety margin 2s"},
		{[]string{"run", "--timeout", "-1s", "x", "true"}, exitUsage, "--timeout"},
		{[]string{"run", "x", "--nope", "true"}, exitUsage, "etcdlock run: unknown flag --nope (see 'etcdlock help run')\n"},
		{[]string{"run", "-n", "0", "x", "true"}, exitUsage, "-n must be between 1 and"},
		{[]string{"run", "--shared", "--write", "x", "true"}, exitUsage, "do not go together"},
		{[]string{"run", "--write", "-n", "2", "x", "true"}, exitUsage, "do not go together with -n"},
		{[]string{"run", "--ttl", "abc", "x", "true"}, exitUsage, `etcdlock run: invalid value "abc" for --ttl: not a duration`},
		{[]string{"run", "-n", "abc", "x", "true"}, exitUsage, `etcdlock run: invalid value "abc" for -n: not a whole number`},
		{[]string{"run", "--ttl", "2", "--grace", "1", "x", "true"}, exitUsage, "not less than the safety margin"}, // whole seconds: 2s and 1s
		{[]string{"run", "--timeout", "-1", "x", "true"}, exitUsage, "--timeout must not be negative"},
		{[]string{"run", "--cert", "c.pem", "x", "true"}, exitUsage, "--cert and --key go together"},
		{[]string{"run", "x", "--", "/nonexistent/cmd"}, exitNotFound, "not found"},
		{[]string{"run", "x", "--", "/"}, exitCannotExec, "cannot be executed"},
		{[]string{"elect"}, exitUsage, "missing NAME"},
		{[]string{"elect", "x"}, exitUsage, "missing CMD"},
		{[]string{"elect", "--grace", "-1s", "x", "true"}, exitUsage, "--grace"},
		{[]string{"elect", "x", "--", "/nonexistent/cmd"}, exitNotFound, "not found"},
		{[]string{"status"}, exitUsage, "missing NAME"},
		{[]string{"status", "x", "y"}, exitUsage, "unexpected argument"},
		{[]string{"status", "--kind", "queue", "x"}, exitUsage, "--kind"},
		{[]string{"observe", "x", "y"}, exitUsage, "unexpected argument"},
		{[]string{"dev", "--listen", "2379"}, exitUsage, "--listen"},
		{[]string{"dev", "extra"}, exitUsage, "unexpected argument"},
		{[]string{"run", "--dial-timeout", "0s", "x", "true"}, exitUsage, "--dial-timeout"},
	} {
		code, _, errOut := runCmd(t, time.Minute, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.err) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("etcdlock %q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.err)
		}
	}
	for _, c := range []string{"run", "elect", "status", "observe", "dev", "version"} {
		code, out, _ := runCmd(t, time.Minute, c, "--help")
		if code != exitOK || !strings.Contains(out, "usage: etcdlock "+c) {
			t.Errorf("etcdlock %s --help: exit %d, stdout:\n%s", c, code, out)
		}
		// --help after NAME works too.
		if c != "dev" && c != "version" {
			if code, out, _ := runCmd(t, time.Minute, c, "x", "--help"); code != exitOK || !strings.Contains(out, "usage: etcdlock "+c) {
				t.Errorf("etcdlock %s x --help: exit %d", c, code)
			}
		}
	}
}

// TestChildEnvNamesTheHold: CMD's $ETCDLOCK_KEY, $ETCDLOCK_TOKEN and
// $ETCDLOCK_LEASE are the hold's key, that key's create revision (not the
// revision of some later read, which a fenced resource would take for a
// newer holder's) and its lease, for run and for elect.
func TestChildEnvNamesTheHold(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	const shEnv = `echo "env $TAG $$ $ETCDLOCK_KEY $ETCDLOCK_TOKEN $ETCDLOCK_LEASE" >> "$LOG"; `
	ctxT := func(t *testing.T, d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}
	// Writes elsewhere, so that the revision moves past the keys' own.
	for i := range 3 {
		if _, err := e.cli.Put(ctxT(t, 5*time.Second), e.ns+"other/"+strconv.Itoa(i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	procs := []*proc{
		e.start("run", "run", "job", "--", "sh", "-c", shEnv+shGate),
		e.start("elect", "elect", "boss", "--", "sh", "-c", shEnv+shGate),
	}
	evs := e.waitEvents(10*time.Second, "env", 2)
	for _, ev := range evs {
		f := strings.Fields(ev.more)
		if len(f) != 3 {
			t.Fatalf("%s: env event %q", ev.tag, ev.more)
		}
		resp, err := e.cli.Get(ctxT(t, 5*time.Second), f[0])
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 {
			t.Errorf("%s: $ETCDLOCK_KEY %s is not a key in etcd", ev.tag, f[0])
			continue
		}
		kv := resp.Kvs[0]
		if f[1] != strconv.FormatInt(kv.CreateRevision, 10) {
			t.Errorf("%s: $ETCDLOCK_TOKEN %s, want the key's create revision %d (etcd is at %d)", ev.tag, f[1], kv.CreateRevision, resp.Header.Revision)
		}
		if f[2] != leaseHex(clientv3.LeaseID(kv.Lease)) {
			t.Errorf("%s: $ETCDLOCK_LEASE %s, want the key's lease %s", ev.tag, f[2], leaseHex(clientv3.LeaseID(kv.Lease)))
		}
	}
	e.openGate()
	for _, p := range procs {
		p.expect(0, 10*time.Second)
	}
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), e.ns+"other/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	e.requireEmpty()
}
