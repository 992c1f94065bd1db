//go:build unix

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalAtStartReachesCMD sends a forwarded signal the moment CMD's
// guard has been started, before the guard (etcdlock re-executed) can have
// set up its handlers. The signal must reach CMD, not end the guard: here
// SIGQUIT, which Go's runtime would turn into a goroutine dump and exit
// status 2 of the guard, with CMD never run.
func TestSignalAtStartReachesCMD(t *testing.T) {
	// No core files from CMD's SIGQUIT.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CORE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_CORE, &old) })
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep command")
	}
	// The guard's window lasts from its runtime's start to its handlers:
	// sweep the delay over it.
	for i := range 40 {
		var out, errOut bytes.Buffer
		c, err := startChild(sleep, []string{"sleep", "30"}, nil, &out, &errOut)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i) * 500 * time.Microsecond)
		c.signal(syscall.SIGQUIT)
		if st := c.finish(); st != exitSignalBase+int(syscall.SIGQUIT) {
			t.Fatalf("run %d: status %d, want %d (CMD killed by SIGQUIT); stderr:\n%.300s", i, st, exitSignalBase+int(syscall.SIGQUIT), errOut.String())
		}
		if errOut.Len() > 0 {
			t.Fatalf("run %d: stderr: %.300s", i, errOut.String())
		}
	}
}

// TestGuardKillsLeftovers: when CMD exits, what it left running in its
// process group is killed before the status comes back, by the guard
// alone (as outside Linux, where etcdlock cannot wait for the guard
// unreaped and so cannot safely kill the group itself).
func TestGuardKillsLeftovers(t *testing.T) {
	keepZombie = false
	t.Cleanup(func() { keepZombie = true })
	pidFile := filepath.Join(t.TempDir(), "pid")
	// No output writers: a pipe to one would stay open in the leftover,
	// and the guard's Wait would wait for it.
	c, err := startChild("/bin/sh", []string{"sh", "-c", `trap '' TERM; sleep 1000 & echo $! > "$0"; exit 7`, pidFile}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := c.finish(); st != 7 {
		t.Fatalf("status %d, want CMD's 7", st)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// SIGKILL was sent to the leftover before the guard exited; it dies
	// at once, but not synchronously with the guard.
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("CMD's background process %d still runs after CMD's exit", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
