package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/etcdlock/etcdlock/integration"
)

// TestMain fails the package's tests if they leave goroutines behind.
//
// With $ETCDLOCK_TEST_AS_MAIN set to 1 the test binary is etcdlock itself:
// the end-to-end tests run it as a separate process (see e2e_test.go).
func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main() // never returns
	}
	code := m.Run()
	if err := closeE2E(); err != nil {
		fmt.Fprintf(os.Stderr, "closing the end-to-end tests' etcd server: %v\n", err)
		code = max(code, 1)
	}
	if code == 0 {
		if err := goleak.Find(integration.GoleakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runCmd runs the etcdlock command line args in-process and returns its exit
// status, stdout and stderr.
func runCmd(t *testing.T, timeout time.Duration, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestDemo runs the demo in-process: it must exit 0 with the stale write
// rejected and no update lost.
func TestDemo(t *testing.T) {
	code, out, errOut := runCmd(t, 2*time.Minute, "demo")
	t.Logf("stdout:\n%s", out)
	if code != exitOK {
		t.Fatalf("demo exited %d, want 0; stderr:\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "demo: ") || !strings.Contains(last, "1 stale write rejected") || !strings.Contains(last, ", 0 lost updates") {
		t.Errorf("last line = %q, want the summary with 1 stale write rejected and 0 lost updates", last)
	}
	for _, want := range []string{"TAKEOVER", "REJECTED by the database: fencing: stale token", "Done had closed", "a row in SQLite database"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestUsage checks the exit statuses and help of the command line.
func TestUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout, if not ""
	}{
		{nil, exitUsage, ""},
		{[]string{"help"}, exitOK, "observe"},
		{[]string{"--help"}, exitOK, "demo"},
		{[]string{"help", "help"}, exitOK, "The commands are"},
		{[]string{"help", "--help"}, exitOK, "The commands are"},
		{[]string{"help", "-h"}, exitOK, "The commands are"},
		{[]string{"help", "nope"}, exitUsage, ""},
		{[]string{"nope"}, exitUsage, ""},
		{[]string{"demo", "--help"}, exitOK, "usage: etcdlock demo"},
		{[]string{"demo", "extra"}, exitUsage, ""},
		{[]string{"help", "connection"}, exitOK, "$ETCDCTL_ENDPOINTS"},
		{[]string{"help", "supervision"}, exitOK, "SIGKILL --grace later"},
		{[]string{"help", "version"}, exitOK, "usage: etcdlock version"},
		{[]string{"version", "extra"}, exitUsage, ""},
	} {
		code, out, errOut := runCmd(t, time.Minute, tc.args...)
		if code != tc.code {
			t.Errorf("etcdlock %q exited %d, want %d; stderr: %s", tc.args, code, tc.code, errOut)
		}
		if !strings.Contains(out, tc.out) {
			t.Errorf("etcdlock %q: stdout lacks %q:\n%s", tc.args, tc.out, out)
		}
	}
}
