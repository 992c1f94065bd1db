//go:build unix

package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/lock"
)

// TestGlobalFlagsBeforeCommand: the connection flags may come before the
// command, as etcdctl's do ("etcdlock --endpoints X status NAME"); one
// after the command wins; anything else before the command is refused in
// one line.
func TestGlobalFlagsBeforeCommand(t *testing.T) {
	e := newE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := lock.NewMutex(e.cli, "g", lock.WithNamespace(e.ns), lock.WithHolder("go-holder"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ep := e.srv.Endpoint()
	for _, args := range [][]string{
		{"--endpoints", ep, "--namespace=" + e.ns, "status", "g"},
		{"--endpoints=" + ep, "--dial-timeout", "5", "--namespace", "elsewhere/", "status", "--namespace", e.ns, "g"},
	} {
		code, out, errOut := runCmd(t, time.Minute, args...)
		if code != exitOK || !strings.Contains(out, "go-holder") {
			t.Errorf("etcdlock %q: exit %d, stdout %q, stderr %q; want the holder go-holder", args, code, out, errOut)
		}
	}
	if err := h.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--bogus", "status", "g"}, "etcdlock: unknown flag --bogus before the command: only the connection flags may come before it"},
		{[]string{"--endpoints", ep}, "etcdlock: missing command after the connection flags"},
		{[]string{"--endpoints"}, "etcdlock: flag --endpoints needs a value"},
		{[]string{"--endpoints", ep, "nope"}, `etcdlock: unknown command "nope"`},
	} {
		code, _, errOut := runCmd(t, time.Minute, tc.args...)
		if code != exitUsage || !strings.HasPrefix(errOut, tc.err) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("etcdlock %q: exit %d, stderr %q; want 2 and one line %q", tc.args, code, errOut, tc.err)
		}
	}
	if code, out, _ := runCmd(t, time.Minute, "--endpoints", ep, "help", "status"); code != exitOK || !strings.Contains(out, "usage: etcdlock status") {
		t.Errorf("etcdlock --endpoints X help status: exit %d, stdout %q", code, out)
	}
}

// TestVersion: "etcdlock version" names etcdlock's version and its etcd
// client's, from the build information.
func TestVersion(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCmd(t, time.Minute, "version")
	if code != exitOK || !strings.Contains(out, "etcdlock version: ") || !strings.Contains(out, "etcd client version: v3.") ||
		strings.Contains(out, "unknown") {
		t.Errorf("etcdlock version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestStatusAge: status gives the age of every key whose value ends in
// " since <RFC 3339 time>", with or without fractional seconds (a Go
// program's as well as run's), and --json gives it to the millisecond.
func TestStatusAge(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m, err := lock.NewMutex(e.cli, "a", lock.WithNamespace(e.ns), lock.WithHolder("app:7 since "+start.Format(time.RFC3339)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Unlock(ctx) }()
	now := func() time.Time { return start.Add(1610730688) } // 1.610730688s
	st, err := readStatus(ctx, e.cli, e.ns, "a", []string{"mutex"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Queues) != 1 || len(st.Queues[0].Entries) != 1 || st.Queues[0].Entries[0].Age == nil {
		t.Fatalf("status %+v: want one holder with an age", st)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"age_seconds":1.611,`) {
		t.Errorf("JSON %s: want age_seconds 1.611", b)
	}
}
