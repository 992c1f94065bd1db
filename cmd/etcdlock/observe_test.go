//go:build unix

package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/election"
)

// TestObserveOutage: while etcd is down, observe says on stderr that it
// cannot confirm the leader and prints the leader it showed, marked
// unconfirmed (it may have lost its term meanwhile); when etcd is back it
// says so and shows a confirmed leader again.
func TestObserveOutage(t *testing.T) {
	t.Parallel()
	e := downE2E(t)
	p := e.start("o", "observe", "el")
	outLines := func() []string { return strings.Split(strings.TrimSpace(p.outText()), "\n") }
	e.waitFor(30*time.Second, "observe's first line", func() bool { return strings.Contains(p.outText(), "no leader") })
	el, err := election.New(e.cli, "el", election.WithNamespace(e.ns), election.WithTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer el.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := el.Campaign(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	e.waitFor(30*time.Second, "the leader on stdout", func() bool { return strings.Contains(p.outText(), `leader "one"`) })

	if err := e.srv.Member().HardStop(); err != nil {
		t.Fatal(err)
	}
	e.waitFor(60*time.Second, "observe to say it cannot confirm the leader", func() bool {
		ls := outLines()
		return strings.Contains(p.errText(), "etcdlock observe: cannot confirm the leader: ") &&
			strings.HasSuffix(ls[len(ls)-1], "(unconfirmed)")
	})
	ls := outLines()
	if last := ls[len(ls)-1]; !strings.Contains(last, `leader "one" token `) {
		t.Errorf("last line %q, want the leader shown last, marked unconfirmed", last)
	}
	marked := len(ls)

	if err := e.srv.Member().Restart(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitFor(60*time.Second, "observe to say etcd answers again, and show a confirmed leader", func() bool {
		ls := outLines()
		return strings.Contains(p.errText(), "etcdlock observe: etcd answers again") &&
			len(ls) > marked && !strings.Contains(ls[len(ls)-1], "unconfirmed")
	})
	p.signal(syscall.SIGTERM)
	p.expect(exitOK, 10*time.Second)
	t.Logf("stdout:\n%s\nstderr:\n%s", p.outText(), p.errText())
	if n := strings.Count(p.errText(), "\n"); n != 2 {
		t.Errorf("stderr %q: want two lines, the outage and the end of it", p.errText())
	}
}
