//go:build unix

package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/lock"
)

// goHolder logs, to the children's event log, the start and end of the
// critical sections of a Go program's lock.Mutex.
type goHolder struct {
	e  *e2eEnv
	mu sync.Mutex
	f  *os.File
}

func newGoHolder(e *e2eEnv) *goHolder {
	f, err := os.OpenFile(e.log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = f.Close() })
	return &goHolder{e: e, f: f}
}

func (g *goHolder) log(kind, tag string, more ...any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	line := fmt.Sprintf("%s %s %d", kind, tag, os.Getpid())
	for _, m := range more {
		line += fmt.Sprint(" ", m)
	}
	if _, err := fmt.Fprintln(g.f, line); err != nil {
		g.e.t.Error(err)
	}
}

// mutex returns a Go program's lock.NewMutex(cli, name) in the test's
// namespace, closed at cleanup.
func (g *goHolder) mutex(name string) *lock.Mutex {
	m, err := lock.NewMutex(g.e.cli, name, lock.WithNamespace(g.e.ns), lock.WithTTL(5*time.Second))
	if err != nil {
		g.e.t.Fatal(err)
	}
	g.e.t.Cleanup(func() { _ = m.Close() })
	return m
}

// TestRunExcludesGoMutex: "etcdlock run NAME" and a Go program's
// lock.NewMutex(cli, NAME) are one lock. A run started while the Go
// program holds does not start CMD until it unlocks; runs and Go holders
// mixed never overlap; tokens grow across both; no key is left.
func TestRunExcludesGoMutex(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	g := newGoHolder(e)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	m := g.mutex("reports/daily")
	h, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g.log("start", "G0", h.Token().Revision)
	r1 := e.start("R1", "run", "reports/daily", "--", "sh", "-c", shStart+shEnd)
	r2 := e.start("R2", "run", "reports/daily", "--", "sh", "-c", shStart+shEnd)
	e.waitKeys(10*time.Second, "", 3) // G0's key and both runs' keys
	g.log("end", "G0")
	if err := h.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r1.expect(0, 30*time.Second)
	r2.expect(0, 30*time.Second)

	// Mixed: three Go holders and four runs at once.
	var wg sync.WaitGroup
	for i := range 3 {
		m := g.mutex("reports/daily")
		wg.Go(func() {
			for j := range 3 {
				tag := "G" + strconv.Itoa(i+1) + "." + strconv.Itoa(j)
				h, err := m.Lock(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				g.log("start", tag, h.Token().Revision)
				time.Sleep(20 * time.Millisecond) // a critical section
				g.log("end", tag)
				if err := h.Unlock(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	var procs []*proc
	for i := range 4 {
		procs = append(procs, e.start("W"+strconv.Itoa(i), "run", "reports/daily", "--", "sh", "-c", shStart+"sleep 0.02; "+shEnd))
	}
	wg.Wait()
	for _, p := range procs {
		p.expect(0, 30*time.Second)
	}
	evs := e.events()
	if got := count(evs, "start"); got != 1+2+9+4 {
		t.Fatalf("%d critical sections, want 16:\n%s", got, e.eventText())
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

// TestRunRefusesOtherKinds: the kinds of lock do not exclude each other,
// so run refuses to run CMD under one kind of NAME while another kind of
// NAME has keys (a Go RWMutex's, a --shared run's): it says so in one
// line, exits 125, and leaves no key of its own.
func TestRunRefusesOtherKinds(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rw, err := lock.NewRWMutex(e.cli, "job", lock.WithNamespace(e.ns))
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	r, err := rw.RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"run", "job"}, {"run", "-n", "2", "job"}} {
		p := e.start("X", append(args, "--", "sh", "-c", shStart)...)
		p.expect(exitRunFailure, 30*time.Second)
		msg := p.errText()
		if !strings.Contains(msg, `"job" is also in use as a reader-writer lock (1 key under `+e.ns+"rw/job/)") ||
			!strings.Contains(msg, "CMD did not run") || strings.Count(msg, "\n") != 1 {
			t.Errorf("etcdlock %q: stderr %q, want one line saying job is also a reader-writer lock", args, msg)
		}
	}
	// The same kind works: a --shared run holds with the Go reader.
	e.start("S", "run", "--shared", "job", "--", "sh", "-c", shStart).expect(0, 30*time.Second)
	if err := r.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if got := count(e.events(), "start"); got != 1 {
		t.Errorf("%d children ran, want only the --shared run's:\n%s", got, e.eventText())
	}
	e.requireEmpty()
}
