//go:build unix

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
