//go:build unix

package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/integration"
)

// downE2E is an end-to-end environment on a server of the test's own, so
// that the test can stop it.
func downE2E(t *testing.T) *e2eEnv {
	t.Helper()
	needUnix(t)
	return newE2EOn(t, integration.NewServer(t, integration.WithoutFsync()))
}

// TestRunEtcdDies: etcd stops while run holds the lock. The hold is
// presumed lost when its lease deadline passes, CMD is stopped, and run
// exits 121 with exactly one line on stderr, without waiting for etcd to
// answer the revoke of a lease it will expire anyway.
func TestRunEtcdDies(t *testing.T) {
	t.Parallel()
	e := downE2E(t)
	p := e.start("A", "run", "--ttl", "3s", "job", "--", "sh", "-c", shStart+shForever)
	child := e.waitEvents(30*time.Second, "start", 1)[0]
	stopped := time.Now()
	if err := e.srv.Member().HardStop(); err != nil {
		t.Fatal(err)
	}
	p.expect(exitLost, 60*time.Second)
	t.Logf("run exited %v after etcd stopped", time.Since(stopped))
	if alive(child.pid) {
		t.Errorf("CMD still runs")
	}
	msg := p.errText()
	if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, `etcdlock run: lock "job" lost while CMD ran`) {
		t.Errorf("stderr %q, want one line saying the lock was lost", msg)
	}
}

// TestElectEtcdDies: etcd stops while elect leads. CMD is stopped, elect
// says so in one line and campaigns again, with no line about resigning
// the lost term; on SIGTERM it exits 143 with one more line and none about
// closing the election.
func TestElectEtcdDies(t *testing.T) {
	t.Parallel()
	e := downE2E(t)
	p := e.start("A", "elect", "--verbose", "--ttl", "3s", "el", "--", "sh", "-c", shStart+shForever)
	e.waitEvents(30*time.Second, "start", 1)
	if err := e.srv.Member().HardStop(); err != nil {
		t.Fatal(err)
	}
	// --verbose says when each campaign starts: the second comes after the
	// lost term was resigned (or given up on).
	e.waitFor(60*time.Second, "elect to campaign again", func() bool {
		return strings.Count(p.errText(), "campaigning in election") >= 2
	})
	p.signal(syscall.SIGTERM)
	p.expect(128+int(syscall.SIGTERM), 60*time.Second)
	msg := p.errText()
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "interrupted") {
		t.Errorf("last line %q, want the interruption", last)
	}
	if !strings.Contains(msg, "lost while CMD ran") {
		t.Errorf("stderr %q, want the loss", msg)
	}
	for _, l := range lines {
		if strings.Contains(l, "resigning") || strings.Contains(l, "closing") {
			t.Errorf("line %q: want no word of resigning the lost term or closing the election", l)
		}
	}
}
