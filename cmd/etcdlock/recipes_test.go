//go:build unix

package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// startedAt reads the time a child wrote to file with date +%s%N.
func startedAt(t *testing.T, file string) time.Time {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return time.Unix(0, ns)
}

// TestRunLockDelay: with --lock-delay, the run behind a holder whose lease
// was revoked starts its CMD no sooner than the delay after the revoke.
func TestRunLockDelay(t *testing.T) {
	e := newE2E(t)
	const d = 2 * time.Second
	a := e.start("A", "run", "--lock-delay", d.String(), "--ttl", "5s", "job", "--", "sh", "-c", shStart+shForever)
	e.waitEvents(10*time.Second, "start", 1)
	at := filepath.Join(e.dir, "b-started")
	b := e.start("B", "run", "--lock-delay", d.String(), "job", "--", "sh", "-c", "date +%s%N > "+at)
	e.waitKeys(10*time.Second, "mutex/", 2)
	lost := time.Now() // no later than the loss
	e.revoke(e.leaseOf("mutex/"))
	a.expect(exitLost, 10*time.Second)
	b.expect(exitOK, 20*time.Second)
	if gap := startedAt(t, at).Sub(lost); gap < d {
		t.Errorf("B's CMD started %v after A's loss, --lock-delay %v", gap, d)
	}
	e.waitKeys(10*time.Second, "", 0)
	e.requireEmpty()
}

// TestRunEtcdLayout: "run --etcd-layout NAME" waits for a holder of etcd's
// own lock NAME (concurrency.Mutex, as etcdctl lock NAME takes it).
func TestRunEtcdLayout(t *testing.T) {
	e := newE2E(t)
	name := e.ns + "legacy"
	s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	em := concurrency.NewMutex(s, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := em.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	at := filepath.Join(e.dir, "started")
	p := e.start("R", "run", "--etcd-layout", name, "--", "sh", "-c", "date +%s%N > "+at)
	e.waitKeys(10*time.Second, "legacy/", 2)
	unlocked := time.Now()
	if err := em.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	p.expect(exitOK, 20*time.Second)
	if started := startedAt(t, at); started.Before(unlocked) {
		t.Errorf("CMD started %v before etcd's Mutex was unlocked", unlocked.Sub(started))
	}
	e.requireEmpty()

	for _, args := range [][]string{
		{"--lock-delay", "0s"},
		{"--lock-delay", "1s", "--shared"},
		{"--lock-delay", "1s", "--etcd-layout"},
		{"--etcd-layout", "-n", "2"},
		{"--etcd-layout", "--min-hold", "1s"},
	} {
		args = append(append([]string{"run", "--endpoints", e.srv.Endpoint(), "--namespace", e.ns}, args...), "x", "--", "true")
		if code, _, errOut := runCmd(t, time.Minute, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d: %s", args, code, exitUsage, errOut)
		}
	}
}
