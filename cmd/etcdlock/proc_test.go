//go:build unix

package main

import (
	"bytes"
	"os/exec"
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
