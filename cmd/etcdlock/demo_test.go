//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemoInterrupted: a demo stopped before its end (Ctrl-C) says so in
// one line, and claims no invariant failed.
func TestDemoInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"demo"}, &stdout, &stderr)
	msg := stderr.String()
	if code != exitFailure || strings.Count(msg, "\n") != 1 || strings.Contains(msg, "FAILED") || !strings.Contains(msg, "context canceled") {
		t.Errorf("interrupted demo: exit %d, stderr %q; want 1 and one line saying it was interrupted, no FAILED", code, msg)
	}
	if lines := strings.Split(strings.TrimSpace(stdout.String()), "\n"); !strings.HasPrefix(lines[len(lines)-1], "demo: ") {
		t.Errorf("interrupted demo: stdout does not end with the summary:\n%s", stdout.String())
	}
}

// TestDemoWriteFailure: a demo whose events cannot be written (stdout on a
// full disk) fails, in one line, instead of exiting 0 with nothing shown.
func TestDemoWriteFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	code := run(ctx, []string{"demo"}, failingWriter{}, &stderr)
	msg := stderr.String()
	if code != exitFailure || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "no space left on device") {
		t.Errorf("demo with a failing stdout: exit %d, stderr %q; want 1 and one line naming the error", code, msg)
	}
}

// TestDemoBrokenPipe runs "etcdlock demo | head -1": the demo stops when its
// stdout is closed, and leaves no temporary directory behind (its etcd's
// data, its sockets).
func TestDemoBrokenPipe(t *testing.T) {
	needUnix(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cmd := exec.Command(exe, "demo")
	cmd.Env = append(os.Environ(), asMainEnv+"=1", "GORACE=atexit_sleep_ms=0", "TMPDIR="+tmp)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the demo's first line: %v", err)
	}
	t.Logf("first line: %s", line)
	out.Close() // as head does once it has its line

	var code int
	select {
	case <-done:
		var ee *exec.ExitError
		switch {
		case waitErr == nil:
		case errors.As(waitErr, &ee):
			code = exitStatus(ee.ProcessState)
		default:
			t.Fatal(waitErr)
		}
	case <-time.After(time.Minute):
		t.Fatal("the demo still runs a minute after its stdout was closed")
	}
	if code != exitFailure {
		t.Errorf("demo | head -1: exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in $TMPDIR: %s", e.Name())
	}
}

// TestDemoStores: the demo's counter in memory (--store memory) is fenced
// as well as the default SQLite one (TestDemo): the stale write is refused,
// by the fence rather than the database; an unknown store is a usage error.
func TestDemoStores(t *testing.T) {
	code, out, errOut := runCmd(t, 2*time.Minute, "demo", "--store", "memory")
	if code != exitOK {
		t.Fatalf("demo --store memory exited %d, want 0; stderr:\n%s\nstdout:\n%s", code, errOut, out)
	}
	for _, want := range []string{"REJECTED by the fence: fencing: stale token", "1 stale write rejected, 0 lost updates", "an integer in memory"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo --store memory: output lacks %q:\n%s", want, out)
		}
	}
	if code, _, errOut := runCmd(t, time.Minute, "demo", "--store", "redis"); code != exitUsage || !strings.Contains(errOut, `--store "redis"`) {
		t.Errorf("demo --store redis: exit %d, stderr %q; want a usage error", code, errOut)
	}
}
