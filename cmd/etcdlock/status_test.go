//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/lock"
)

// TestStatus builds one queue of each kind with the library, holders and
// waiters, and checks what status shows, in JSON and as text.
func TestStatus(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	t.Cleanup(e.requireEmpty) // after the deferred Closes, which release every key
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // ends the waiters' waits
	wait := func(f func(context.Context) error) {
		wg.Go(func() { _ = f(ctx) })
	}
	ns := lock.WithNamespace(e.ns)

	// mutex: a holder and a waiter.
	m, err := lock.NewMutex(e.cli, "q", ns, lock.WithHolder("m-holder"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	wait(func(ctx context.Context) error { _, err := m.Lock(ctx); return err })
	// rw: a reader holding, a writer waiting, a reader waiting behind it.
	rw, err := lock.NewRWMutex(e.cli, "q", ns, lock.WithHolder(holderDesc(time.Now().Add(-time.Minute))))
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if _, err := rw.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitKeys(10*time.Second, "rw/", 1)
	wait(func(ctx context.Context) error { _, err := rw.Lock(ctx); return err })
	e.waitKeys(10*time.Second, "rw/", 2)
	wait(func(ctx context.Context) error { _, err := rw.RLock(ctx); return err })
	// sem, limit 3: holders of 2 and 1, a waiter for 1.
	s, err := lock.NewSemaphore(e.cli, "q", 3, ns)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []int64{2, 1} {
		if _, err := s.Acquire(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	wait(func(ctx context.Context) error { _, err := s.Acquire(ctx, 1); return err })
	// election: a leader and a candidate.
	el, err := election.New(e.cli, "q", election.WithNamespace(e.ns))
	if err != nil {
		t.Fatal(err)
	}
	defer el.Close()
	if _, err := el.Campaign(ctx, "boss"); err != nil {
		t.Fatal(err)
	}
	wait(func(ctx context.Context) error { _, err := el.Campaign(ctx, "deputy"); return err })
	e.waitKeys(10*time.Second, "", 2+3+3+2)

	args := []string{"status", "--endpoints", e.srv.Endpoint(), "--namespace", e.ns, "q"}
	code, out, errOut := runCmd(t, time.Minute, append(args, "--json")...)
	if code != exitOK {
		t.Fatalf("status exited %d: %s", code, errOut)
	}
	var st lockStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	type row struct{ state, mode, value string }
	want := map[string][]row{
		"mutex":    {{"holding", "", "m-holder"}, {"waiting", "", "m-holder"}},
		"rw":       {{"holding", "read", ""}, {"waiting", "write", ""}, {"waiting", "read", ""}},
		"sem":      {{"holding", "", ""}, {"holding", "", ""}, {"waiting", "", ""}},
		"election": {{"leader", "", "boss"}, {"candidate", "", "deputy"}},
	}
	if len(st.Queues) != len(want) || st.Name != "q" || st.Namespace != e.ns || st.Revision == 0 {
		t.Fatalf("status = %+v", st)
	}
	for _, q := range st.Queues {
		w := want[q.Kind]
		if len(q.Entries) != len(w) {
			t.Errorf("%s: %d entries, want %d: %+v", q.Kind, len(q.Entries), len(w), q.Entries)
			continue
		}
		last := int64(0)
		for i, en := range q.Entries {
			if en.State != w[i].state || en.Mode != w[i].mode || (w[i].value != "" && en.Value != w[i].value) {
				t.Errorf("%s entry %d = %+v, want %+v", q.Kind, i, en, w[i])
			}
			if en.Token <= last || en.TTL <= 0 || len(en.Lease) != 16 || !strings.HasPrefix(en.Key, q.Prefix) {
				t.Errorf("%s entry %d = %+v: want growing tokens, a live lease, a key under %s", q.Kind, i, en, q.Prefix)
			}
			last = en.Token
		}
		switch q.Kind {
		case "sem":
			if q.Limit != 3 || q.Entries[0].Permits != 2 || q.Entries[1].Permits != 1 {
				t.Errorf("sem = %+v, want limit 3 and permits 2, 1, 1", q)
			}
		case "rw":
			if a := q.Entries[0].Age; a == nil || *a < 59 || *a > 120 {
				t.Errorf("rw reader's age = %v, want about 60s", a)
			}
		case "mutex":
			if q.Entries[0].Age != nil {
				t.Errorf("mutex holder's age = %v, want unknown", *q.Entries[0].Age)
			}
		}
	}

	code, out, errOut = runCmd(t, time.Minute, args...)
	if code != exitOK {
		t.Fatalf("status exited %d: %s", code, errOut)
	}
	for _, want := range []string{`mutex "q"`, `reader-writer lock "q"`, `semaphore "q"`, "3 of 3 permits held", `election "q"`,
		"STATE", "MODE", "PERMITS", "TOKEN", "LEASE", "TTL", "AGE", "VALUE", "leader", "candidate", "boss", "1m"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCmd(t, time.Minute, "status", "--endpoints", e.srv.Endpoint(), "--namespace", e.ns, "--kind", "mutex", "none")
	if code != exitOK || !strings.Contains(out, "no holders, waiters or candidates") {
		t.Errorf("status of nothing: exit %d:\n%s", code, out)
	}
}

// TestStatusInvalidKeys checks that status judges keys as the lock package
// does: a stray key under a reader-writer lock keeps writers out but not
// readers, and a semaphore entry behind one of another limit is invalid.
func TestStatusInvalidKeys(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	// After the deferred Closes and the stray keys' deletion (cleanups run
	// last registered first).
	t.Cleanup(e.requireEmpty)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := lock.WithNamespace(e.ns)
	rw, err := lock.NewRWMutex(e.cli, "bad", ns)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	s, err := lock.NewSemaphore(e.cli, "bad", 3, ns)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func(key string) {
		if _, err := e.cli.Put(ctx, key, "v1 1 5 elsewhere"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := e.cli.Delete(ctx, key); err != nil {
				t.Errorf("deleting %s: %v", key, err)
			}
		})
	}
	put(rw.Prefix() + "stray")
	if _, err := rw.RLock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	put(s.Prefix() + "other") // an entry of limit 5 behind one of limit 3

	code, out, errOut := runCmd(t, time.Minute, "status", "--endpoints", e.srv.Endpoint(), "--namespace", e.ns, "--json", "bad")
	if code != exitOK {
		t.Fatalf("status exited %d: %s", code, errOut)
	}
	var st lockStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var got []string
	for _, q := range st.Queues {
		for _, en := range q.Entries {
			got = append(got, q.Kind+":"+en.State+":"+en.Mode)
		}
	}
	if want := "rw:invalid: rw:holding:read sem:holding: sem:invalid:"; strings.Join(got, " ") != want {
		t.Errorf("status shows %q, want %q:\n%s", got, want, out)
	}
}

// TestObserve follows an election through a leader, a successor and no
// leader, as JSON lines from the binary.
func TestObserve(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	p := e.start("o", "observe", "--json", "el")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lines := func(n int) []observeEvent {
		var evs []observeEvent
		e.waitFor(10*time.Second, "observe's output", func() bool {
			evs = nil
			f, err := os.Open(p.stdout)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var ev observeEvent
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
					return false // a line being written
				}
				evs = append(evs, ev)
			}
			return len(evs) >= n
		})
		return evs
	}
	lines(1)
	el, err := election.New(e.cli, "el", election.WithNamespace(e.ns))
	if err != nil {
		t.Fatal(err)
	}
	defer el.Close()
	t1, err := el.Campaign(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	lines(2)
	var wg sync.WaitGroup
	var t2 *election.Term
	wg.Go(func() { t2, _ = el.Campaign(ctx, "two") })
	e.waitKeys(10*time.Second, "election/", 2)
	if err := t1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if t2 == nil {
		t.Fatal("second campaign failed")
	}
	lines(3)
	if err := t2.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	evs := lines(4)
	p.signal(syscall.SIGTERM)
	p.expect(0, 10*time.Second)
	got := make([]string, len(evs))
	for i, ev := range evs {
		got[i] = ev.Value
		if !ev.Leader {
			got[i] = "-"
		}
		if ev.Time == "" || ev.Leader != (ev.Token > 0 && ev.Key != "" && len(ev.Lease) == 16) {
			t.Errorf("event %d = %+v", i, ev)
		}
	}
	if strings.Join(got, " ") != "- one two -" {
		t.Errorf("leaders %q, want no leader, one, two, no leader", got)
	}
	e.requireEmpty()
}

// TestDev starts etcdlock dev on a free port, uses it, and stops it.
func TestDev(t *testing.T) {
	e := newE2E(t)
	p := e.start("d", "dev", "--listen", "127.0.0.1:0")
	var ep string
	e.waitFor(30*time.Second, "dev's endpoint", func() bool {
		ep = strings.TrimSpace(p.outText())
		return strings.HasPrefix(ep, "http://127.0.0.1:")
	})
	q := e.start("x", "run", "--endpoints", ep, "j", "--", "sh", "-c", shStart)
	q.expect(0, 10*time.Second)
	if count(e.events(), "start") != 1 {
		t.Errorf("run against dev did not run its child: %s", q.errText())
	}
	p.signal(syscall.SIGINT)
	p.expect(0, 20*time.Second)
	msg := p.errText()
	i := strings.Index(msg, "data in ")
	if i < 0 {
		t.Fatalf("dev's stderr names no data directory:\n%s", msg)
	}
	dir := strings.Fields(msg[i+len("data in "):])[0]
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data directory %s still there after dev stopped (%v)", dir, err)
	}
}

// failingWriter fails every write, as stdout does on a full disk or a
// closed pipe (with SIGPIPE caught).
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestStatusWriteFailure: status that cannot write its result exits 1 with
// one line on stderr, as text as well as in JSON.
func TestStatusWriteFailure(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	for _, extra := range [][]string{nil, {"--json"}} {
		args := append([]string{"status", "--endpoints", e.srv.Endpoint(), "--namespace", e.ns}, extra...)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var stderr bytes.Buffer
		code := run(ctx, append(args, "x"), failingWriter{}, &stderr)
		cancel()
		if msg := stderr.String(); code != exitFailure || !strings.Contains(msg, "no space left on device") || strings.Count(msg, "\n") != 1 {
			t.Errorf("etcdlock %q with a failing stdout: exit %d, stderr %q; want 1 and one line naming the error", args, code, msg)
		}
	}
}

// TestObserveEventJSON checks the shape of observe --json's lines: a leader
// has every field, even an empty value (Proclaim("") publishes one); no
// leader has only the time and "leader": false.
func TestObserveEventJSON(t *testing.T) {
	for _, tc := range []struct {
		ev   observeEvent
		keys string
	}{
		{observeEvent{Time: "t", Leader: true, Value: "", Key: "k", Token: 3, Lease: "00000000000000ab"}, "key leader lease time token value"},
		{observeEvent{Time: "t", Leader: true, Value: "v", Key: "k", Token: 3, Lease: "00000000000000ab"}, "key leader lease time token value"},
		{observeEvent{Time: "t"}, "leader time"},
	} {
		b, err := json.Marshal(tc.ev)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var got []string
		for k := range m {
			got = append(got, k)
		}
		slices.Sort(got)
		if strings.Join(got, " ") != tc.keys {
			t.Errorf("%+v as JSON: %s, want the keys %s", tc.ev, b, tc.keys)
		}
	}
}

// TestHeldBy: run's timeout message names the oldest key's holder and
// token; for a semaphore, the holder part of its key's value.
func TestHeldBy(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	t.Cleanup(e.requireEmpty)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := lock.NewSemaphore(e.cli, "held", 3, lock.WithNamespace(e.ns), lock.WithHolder("host:1 since x"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := heldBy(e.cli, e.ns, lock.KindSemaphore, "held"); got != "" {
		t.Errorf("heldBy of an idle semaphore = %q, want \"\"", got)
	}
	h, err := s.Acquire(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("; held by host:1 since x (token %d)", h.Token().Revision)
	if got := heldBy(e.cli, e.ns, lock.KindSemaphore, "held"); got != want {
		t.Errorf("heldBy = %q, want %q", got, want)
	}
}
