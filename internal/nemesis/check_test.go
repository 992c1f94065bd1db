package nemesis

import (
	"strings"
	"testing"
	"time"
)

const pfx = "ns/mutex/x/"

func put(rev int64, key string, lease int64, value string, at int64) Event {
	return Event{Rev: rev, Key: key, Lease: lease, Create: rev, Value: value, At: at}
}

func del(rev int64, key string, at int64) Event {
	return Event{Rev: rev, Key: key, Delete: true, At: at}
}

func grant(key string, tok, rpost, ret, unlockAt, doneAt int64) *Grant {
	return &Grant{Worker: "w", Key: key, Token: tok, RPost: rpost, Return: ret, UnlockAt: unlockAt, DoneAt: doneAt, Writer: true, Weight: 1}
}

func findings(t *testing.T, spec lockSpec, evs []Event, gs ...*Grant) grantResult {
	t.Helper()
	return checkGrants(spec, replay(evs, spec), gs, leaseUse(evs))
}

func wantFinding(t *testing.T, r grantResult, substr string) {
	t.Helper()
	for _, f := range r.findings {
		if strings.Contains(f.What, substr) {
			return
		}
	}
	t.Fatalf("no finding with %q in %v", substr, r.findings)
}

func TestGrantsMutex(t *testing.T) {
	spec := lockSpec{prefix: pfx, kind: exclusive}
	evs := []Event{
		put(10, pfx+"a", 1, "w0", 100),
		put(11, pfx+"b", 2, "w1", 110),
		del(12, pfx+"a", 120),
		del(13, pfx+"b", 130),
	}
	good := []*Grant{grant(pfx+"a", 10, 10, 101, 115, 116), grant(pfx+"b", 11, 12, 121, 125, 126)}
	if r := findings(t, spec, evs, good...); len(r.findings) != 0 || r.expiries != 0 {
		t.Fatalf("correct history: %v, %d expiries", r.findings, r.expiries)
	}

	// b reported while a still held: never true when reported, two holders.
	early := grant(pfx+"b", 11, 11, 112, 125, 126)
	r := findings(t, spec, evs, good[0], early)
	wantFinding(t, r, "not true when reported")
	wantFinding(t, r, "2 holders")

	// A token that is not the key's create revision.
	r = findings(t, spec, evs, grant(pfx+"a", 77, 10, 101, 115, 116))
	wantFinding(t, r, "reported token 77")

	// A key that was deleted before it was ever admitted.
	evs2 := []Event{put(10, pfx+"a", 1, "", 100), put(11, pfx+"b", 2, "", 110), del(12, pfx+"b", 120), del(13, pfx+"a", 130)}
	r = findings(t, spec, evs2, grant(pfx+"b", 11, 0, 121, 0, 0))
	wantFinding(t, r, "never admitted")
}

func TestGrantsDeletions(t *testing.T) {
	spec := lockSpec{prefix: pfx, kind: exclusive}
	ms := int64(time.Millisecond)
	// a's lease ends at 12 while its holder has not unlocked.
	evs := []Event{put(10, pfx+"a", 1, "", 0), del(12, pfx+"a", 500*ms)}
	r := findings(t, spec, evs, grant(pfx+"a", 10, 10, ms, 600*ms, 400*ms))
	if len(r.findings) != 0 || r.expiries != 1 {
		t.Fatalf("holder told before the expiry: %v, %d expiries", r.findings, r.expiries)
	}
	r = findings(t, spec, evs, grant(pfx+"a", 10, 10, ms, 900*ms, 700*ms))
	wantFinding(t, r, "told of the loss 200ms late")
	r = findings(t, spec, evs, grant(pfx+"a", 10, 10, ms, 0, 0))
	wantFinding(t, r, "told of the loss never")
	// The lease ended before the grant was even returned (at 550ms): the
	// holder must be told as soon as it is.
	r = findings(t, spec, evs, grant(pfx+"a", 10, 10, 550*ms, 0, 0))
	wantFinding(t, r, "told of the loss never")
	r = findings(t, spec, evs, grant(pfx+"a", 10, 10, 550*ms, 0, 560*ms))
	if len(r.findings) != 0 || r.expiries != 1 {
		t.Fatalf("holder told as the grant returned after the expiry: %v, %d expiries", r.findings, r.expiries)
	}

	// a deleted while its lease lives on (b is created on it later), and
	// not by its holder: a stale or foreign delete.
	evs = append(evs, put(13, pfx+"b", 1, "", 600*ms))
	r = findings(t, spec, evs, grant(pfx+"a", 10, 10, ms, 700*ms, 700*ms))
	wantFinding(t, r, "by someone else")
	told := grant(pfx+"a", 10, 10, ms, 700*ms, 450*ms) // told by the delete itself
	told.DoneCause = "deleted"
	wantFinding(t, findings(t, spec, evs, told), "by someone else")
	// Deleted by the library after it told the holder it lost the hold.
	given := grant(pfx+"a", 10, 10, ms, 700*ms, 450*ms)
	given.DoneCause = causeDeadline
	r = findings(t, spec, evs, given)
	if len(r.findings) != 0 || r.expiries != 0 {
		t.Fatalf("key of a hold given up deleted by the library: %v, %d expiries", r.findings, r.expiries)
	}
	// Deleted after its holder asked to unlock: its own unlock.
	r = findings(t, spec, evs, grant(pfx+"a", 10, 10, ms, 400*ms, 400*ms))
	if len(r.findings) != 0 || r.expiries != 0 {
		t.Fatalf("own unlock: %v, %d expiries", r.findings, r.expiries)
	}
}

func TestGrantsRWAndSemaphore(t *testing.T) {
	rw := lockSpec{prefix: pfx, kind: readWrite}
	evs := []Event{
		put(10, pfx+"r/a", 1, "", 0),
		put(11, pfx+"r/b", 2, "", 0),
		put(12, pfx+"w/c", 3, "", 0),
		put(13, pfx+"r/d", 4, "", 0), // behind the writer
		// Each deleted by its holder's unlock (at time 5, see below).
		del(14, pfx+"r/a", 10),
		del(15, pfx+"r/b", 10),
		del(16, pfx+"w/c", 10),
		del(17, pfx+"r/d", 10),
	}
	lives := replay(evs, rw)
	want := map[string]int64{"r/a": 10, "r/b": 11, "w/c": 15, "r/d": 16}
	for _, l := range lives {
		if got := l.admit; got != want[strings.TrimPrefix(l.key, pfx)] {
			t.Errorf("%s admitted at %d, want %d", l.key, got, want[strings.TrimPrefix(l.key, pfx)])
		}
	}
	reader := func(key string, tok, rpost, ret, unlockAt int64) *Grant {
		g := grant(key, tok, rpost, ret, unlockAt, 0)
		g.Writer = false
		return g
	}
	ok := []*Grant{reader(pfx+"r/a", 10, 10, 1, 3), reader(pfx+"r/b", 11, 11, 1, 3), grant(pfx+"w/c", 12, 15, 4, 6, 0), reader(pfx+"r/d", 13, 16, 7, 9)}
	if r := findings(t, rw, evs, ok...); len(r.findings) != 0 {
		t.Fatalf("correct RW history: %v", r.findings)
	}
	// The writer reported while a reader still held.
	r := findings(t, rw, evs, ok[0], ok[1], grant(pfx+"w/c", 12, 14, 0, 0, 0))
	wantFinding(t, r, "1 writers and 1 readers")

	sem := lockSpec{prefix: pfx, kind: semaphore, limit: 3}
	evs = []Event{
		put(10, pfx+"a", 1, "v1 1 3 h", 0),
		put(11, pfx+"b", 2, "v1 2 3 h", 0),
		put(12, pfx+"c", 3, "v1 1 3 h", 0), // waits: 1+2+1 > 3
		del(13, pfx+"a", 0),
		del(14, pfx+"b", 0),
		del(15, pfx+"c", 0),
	}
	lives = replay(evs, sem)
	if lives[2].admit != 13 {
		t.Fatalf("c admitted at %d, want 13", lives[2].admit)
	}
	b := grant(pfx+"b", 11, 11, 0, 0, 0)
	b.Weight = 2
	r = findings(t, sem, evs, grant(pfx+"a", 10, 10, 0, 0, 0), b, grant(pfx+"c", 12, 12, 0, 0, 0))
	wantFinding(t, r, "4 permits of 3")
}

func TestCheckCounter(t *testing.T) {
	w := func(v int64, s Outcome) Access { return Access{Write: true, Value: v, Status: s} }
	if r := checkCounter([]Access{w(1, OK), w(2, OK), w(3, Unknown), w(3, OK)}, 3); len(r.findings) != 0 || r.lost != 0 {
		t.Fatalf("fine chain: %+v", r)
	}
	r := checkCounter([]Access{w(1, OK), w(2, OK), w(2, OK), w(3, OK)}, 3)
	if r.lost != 1 || len(r.findings) == 0 {
		t.Fatalf("a lost update: %+v", r)
	}
	if r := checkCounter([]Access{w(1, OK), w(2, OK)}, 1); len(r.findings) == 0 {
		t.Fatal("final value below an acknowledged one passed")
	}
}

func TestRegisterModel(t *testing.T) {
	acc := func(write bool, tok, v int64, s Outcome, call, ret int64) Access {
		return Access{Write: write, Writer: true, Token: tok, Value: v, Status: s, Call: call, Ret: ret}
	}
	check := func(strict bool, as ...Access) string {
		t.Helper()
		res, err := checkLinearizable(as, strict, 10*time.Second, "")
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	newer := acc(true, 5, 1, OK, 0, 1)
	if got := check(true, newer, acc(true, 3, 2, OK, 2, 3)); got != LinIllegal {
		t.Fatalf("stale write accepted: %s", got)
	}
	if got := check(true, newer, acc(true, 3, 2, Rejected, 2, 3), acc(false, 5, 1, OK, 4, 5)); got != LinOK {
		t.Fatalf("stale write refused: %s", got)
	}
	if got := check(true, newer, acc(true, 6, 2, Rejected, 2, 3)); got != LinIllegal {
		t.Fatalf("strict fence refused a current token: %s", got)
	}
	if got := check(false, newer, acc(true, 6, 2, Rejected, 2, 3)); got != LinOK {
		t.Fatalf("guarded transaction refused a lost holder: %s", got)
	}
	unknown := acc(true, 6, 2, Unknown, 2, never)
	if got := check(true, newer, unknown, acc(false, 7, 2, OK, 10, 11)); got != LinOK {
		t.Fatalf("read of an unknown write that landed: %s", got)
	}
	if got := check(true, newer, unknown, acc(false, 7, 1, OK, 10, 11)); got != LinOK {
		t.Fatalf("read of an unknown write that did not land: %s", got)
	}
	if got := check(true, newer, acc(false, 5, 7, OK, 2, 3)); got != LinIllegal {
		t.Fatalf("read of a value never written: %s", got)
	}
	// Readers of an RWMutex: fenced by writers only.
	r := func(tok, v int64, s Outcome, call int64) Access {
		return Access{Writer: false, Token: tok, Value: v, Status: s, Call: call, Ret: call + 1}
	}
	if got := check(true, r(7, 0, OK, 0), r(6, 0, OK, 2), acc(true, 8, 1, OK, 4, 5), r(7, 0, Rejected, 6)); got != LinOK {
		t.Fatalf("RW history: %s", got)
	}
	if got := check(true, r(7, 0, OK, 0), acc(true, 6, 1, OK, 4, 5)); got != LinIllegal {
		t.Fatalf("writer older than a reader accepted: %s", got)
	}
}

func TestCheckObserve(t *testing.T) {
	evs := []Event{
		put(10, pfx+"a", 1, "a0", 0),
		put(11, pfx+"b", 2, "b0", 0),
		{Rev: 12, Key: pfx + "a", Lease: 1, Create: 10, Value: "a1"},
		del(13, pfx+"a", 0),
		del(14, pfx+"b", 0),
	}
	lives := replay(evs, lockSpec{prefix: pfx, kind: exclusive})
	ok := []Observation{{pfx + "a", 10, "a0", 0}, {pfx + "a", 10, "a1", 0}, {pfx + "b", 11, "b0", 0}, {"", 0, "", 0}}
	if f := checkObserve(lives, ok); len(f) != 0 {
		t.Fatalf("correct observations: %v", f)
	}
	back := []Observation{{pfx + "b", 11, "b0", 0}, {pfx + "a", 10, "a1", 0}}
	if f := checkObserve(lives, back); len(f) == 0 || !strings.Contains(f[0].What, "back in time") {
		t.Fatalf("going back in time: %v", f)
	}
	if f := checkObserve(lives, []Observation{{pfx + "b", 11, "b1", 0}}); len(f) == 0 {
		t.Fatal("a value the leader never had passed")
	}
	lives = replay(append(evs[:2:2], del(12, pfx+"b", 0)), lockSpec{prefix: pfx, kind: exclusive})
	if f := checkObserve(lives, []Observation{{pfx + "b", 11, "b0", 0}}); len(f) == 0 {
		t.Fatal("a candidate that never led passed")
	}
}

// A semaphore hold that believes it took more permits than its key
// declares: the permits the holders were told they have exceed the limit.
func TestGrantsSemaphoreReportedPermits(t *testing.T) {
	sem := lockSpec{prefix: pfx, kind: semaphore, limit: 3}
	evs := []Event{
		put(10, pfx+"a", 1, "v1 2 3 h", 0),
		put(11, pfx+"b", 2, "v1 1 3 h", 0), // reported as 2 permits
		del(12, pfx+"a", 100),
		del(13, pfx+"b", 100),
	}
	a := grant(pfx+"a", 10, 10, 0, 50, 0)
	a.Weight = 2
	b := grant(pfx+"b", 11, 11, 0, 50, 0)
	b.Weight = 2
	r := findings(t, sem, evs, a, b)
	wantFinding(t, r, "reported 2 permits for 11@"+pfx+"b, but its key takes 1")
	wantFinding(t, r, "4 permits of 3")
}

// A holder told of its loss after the next holder was granted is a real
// overlap even when the watcher received the deletion later still (a
// watcher behind a restarted or paused member receives it late): the
// watcher's receipt is no bound on when the next holder could be granted.
func TestGrantsToldAfterNextGrant(t *testing.T) {
	spec := lockSpec{prefix: pfx, kind: exclusive}
	ms := int64(time.Millisecond)
	evs := []Event{
		put(10, pfx+"a", 1, "", 0),
		put(11, pfx+"b", 2, "", 0),
		del(12, pfx+"a", 2000*ms), // a's lease ended; the watcher is 1s late
		del(13, pfx+"b", 2500*ms),
	}
	a := grant(pfx+"a", 10, 10, ms, 0, 1500*ms)      // told at 1.5s
	b := grant(pfx+"b", 11, 12, 1000*ms, 2400*ms, 0) // granted at 1s
	r := findings(t, spec, evs, a, b)
	wantFinding(t, r, "believed")

	// Told before the next grant (within the tolerance): no finding.
	a.DoneAt = 1050 * ms
	if r := findings(t, spec, evs, a, b); len(r.findings) != 0 {
		t.Fatalf("holder told in time: %v", r.findings)
	}

	// RWMutex: a reader told after a writer's grant; two readers believed
	// at once are fine.
	rw := lockSpec{prefix: pfx, kind: readWrite}
	evs = []Event{
		put(10, pfx+"r/a", 1, "", 0),
		put(11, pfx+"r/b", 2, "", 0),
		put(12, pfx+"w/c", 3, "", 0),
		del(13, pfx+"r/a", 2000*ms),
		del(14, pfx+"r/b", 2000*ms),
		del(15, pfx+"w/c", 2500*ms),
	}
	ra := grant(pfx+"r/a", 10, 10, ms, 0, 1500*ms)
	ra.Writer = false
	rb := grant(pfx+"r/b", 11, 11, 2*ms, 900*ms, 0)
	rb.Writer = false
	wc := grant(pfx+"w/c", 12, 14, 1000*ms, 2400*ms, 0)
	wantFinding(t, findings(t, rw, evs, ra, rb, wc), "believed")
	ra.DoneAt = 950 * ms
	if r := findings(t, rw, evs, ra, rb, wc); len(r.findings) != 0 {
		t.Fatalf("readers at once, then a writer: %v", r.findings)
	}
}

// A workload that completed no critical section once the faults began
// was not exercised by them: its row must be invalid, not passed.
func TestRowExercised(t *testing.T) {
	row := Row{WarmupSections: 10, CriticalSections: 40, FaultsInjected: 5}
	if r := row.exercised(); len(r) != 0 {
		t.Fatalf("exercised row: %v", r)
	}
	row.CriticalSections = 10
	if r := row.exercised(); len(r) == 0 || !strings.Contains(r[0], "under the faults") {
		t.Fatalf("no critical section under the faults: %v", r)
	}
	row = Row{WarmupSections: 10, CriticalSections: 40, FaultsInjected: 5, HolderPauses: 2, longPauses: 1}
	if r := row.exercised(); len(r) == 0 {
		t.Fatal("a pause of 2 TTL without lease expiries passed")
	}
	// Shorter pauses, or pauses the phase's end cut short, need not let a
	// lease expire.
	row.longPauses = 0
	if r := row.exercised(); len(r) != 0 {
		t.Fatalf("short pauses without lease expiries: %v", r)
	}
}

// A seeded bug is caught only by a checker of the library's promises: a
// key left behind by a scenario that went wrong is not a catch.
func TestBugVerdict(t *testing.T) {
	var r BugResult
	r.verdict([]Finding{{CheckCleanup, "keys left: 1"}})
	if r.Caught {
		t.Fatalf("caught by the clean-up check alone: %+v", r)
	}
	r = BugResult{}
	r.verdict([]Finding{{CheckCleanup, "keys left: 1"}, {CheckGrants, "reported token 7"}})
	if !r.Caught || r.Finding != "reported token 7" {
		t.Fatalf("caught by checker (1): %+v", r)
	}
}

// A lease etcd ends before the TTL it acknowledged (etcd-io/etcd#15247: a
// deposed leader's revocations, forwarded to the new leader) is counted
// apart, not as the library's lateness, provided its holder was told by
// the time the acknowledged lease would have ended; the next holder's
// grant after the delete is then no second belief. A holder told later
// than that, or a lease that ended after the acknowledged time, is still
// a violation.
func TestGrantsEarlyRevocation(t *testing.T) {
	spec := lockSpec{prefix: pfx, kind: exclusive}
	ms := int64(time.Millisecond)
	evs := []Event{
		put(10, pfx+"a", 1, "", 0),
		put(11, pfx+"b", 2, "", 0),
		del(12, pfx+"a", 1000*ms), // a's lease ended, seen at 1s
		del(13, pfx+"b", 2500*ms),
	}
	mk := func(doneAt, acked int64) (*Grant, *Grant) {
		a := grant(pfx+"a", 10, 10, ms, 0, doneAt)
		a.DoneCause, a.LeaseAcked = "deleted", acked
		b := grant(pfx+"b", 11, 12, 1050*ms, 2400*ms, 0) // granted after the delete
		return a, b
	}

	// Acknowledged until 1.8s, ended at 1s, told at 1.3s: etcd's.
	a, b := mk(1300*ms, 1800*ms)
	r := findings(t, spec, evs, a, b)
	if len(r.findings) != 0 || r.expiries != 1 || len(r.early) != 1 {
		t.Fatalf("early revocation told in time: %v, %d expiries, early %v", r.findings, r.expiries, r.early)
	}
	if !strings.Contains(r.early[0], "ended at revision 12, seen 800ms before") {
		t.Fatalf("early revocation described as %q", r.early[0])
	}

	// Told before the delete (its deadline; the library then deletes the
	// key itself): nothing to count apart.
	a, b = mk(950*ms, 1800*ms)
	if r := findings(t, spec, evs, a, b); len(r.findings) != 0 || len(r.early) != 0 {
		t.Fatalf("told before the delete: %v, early %v", r.findings, r.early)
	}

	// The watcher late (it saw the delete at 1.2s), the holder told at
	// 1.16s, 110ms after the next grant: exempt when early, and listed.
	lag := []Event{evs[0], evs[1], del(12, pfx+"a", 1200*ms), evs[3]}
	a, b = mk(1160*ms, 1800*ms)
	r = findings(t, spec, lag, a, b)
	if len(r.findings) != 0 || len(r.early) != 1 || !strings.Contains(r.early[0], "told 110ms after w was granted 11") {
		t.Fatalf("early revocation, holder told after the next grant: %v, early %v", r.findings, r.early)
	}
	a, b = mk(1160*ms, 0)
	wantFinding(t, findings(t, spec, lag, a, b), "believed")

	// Unknown acknowledgement, or a lease that ended after it (the
	// keeper's deadline should have told the holder first): violations.
	for _, acked := range []int64{0, 900 * ms} {
		a, b := mk(1300*ms, acked)
		r := findings(t, spec, evs, a, b)
		wantFinding(t, r, "told of the loss 300ms late")
		wantFinding(t, r, "believed")
		if len(r.early) != 0 {
			t.Fatalf("acked %v: counted as early: %v", acked, r.early)
		}
	}

	// Early, but its holder was told after the acknowledged end: late.
	a, b = mk(2000*ms, 1800*ms)
	r = findings(t, spec, evs, a, b)
	wantFinding(t, r, "told of the loss 1000ms late")
	wantFinding(t, r, "believed")

	// An early delete of a lease still in use afterwards is someone
	// else's delete, whatever the acknowledgement.
	a, b = mk(1300*ms, 1800*ms)
	r = findings(t, spec, append(evs, put(14, pfx+"c", 1, "", 1100*ms)), a, b)
	wantFinding(t, r, "by someone else")
}
