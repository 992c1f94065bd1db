//go:build unix

package cmdline

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// TestCausedBySignal checks that the cause signal.NotifyContext gives is
// recognized, and nothing else.
func TestCausedBySignal(t *testing.T) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGUSR2)
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("signal context not cancelled")
	}
	if !CausedBySignal(ctx) {
		t.Errorf("cause %v not recognized as a signal", context.Cause(ctx))
	}
	c2, cancel := context.WithCancel(context.Background())
	cancel()
	c3, cancel3 := context.WithTimeout(context.Background(), 0)
	defer cancel3()
	<-c3.Done()
	if CausedBySignal(c2) || CausedBySignal(c3) {
		t.Error("cancel or timeout taken for a signal")
	}
}
