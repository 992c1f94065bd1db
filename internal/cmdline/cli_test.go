package cmdline

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/lock"
)

// testCmd is a command with a flag of each type the commands use.
func testCmd() *Command {
	return &Command{Prog: "etcdlock", Name: "run", Usage: "etcdlock run", Setup: func(fs *flag.FlagSet) RunFunc {
		var d time.Duration
		DurationVar(fs, &d, "ttl", 10*time.Second, "ttl")
		fs.Int64("n", 0, "permits")
		fs.Bool("verbose", false, "verbose")
		return func(_ context.Context, stdout, _ io.Writer) int {
			fmt.Fprint(stdout, d)
			return ExitOK
		}
	}}
}

// TestFlagErrors: a bad flag is reported in one line that starts with the
// command, names the flag as the help does (--ttl, -n), and points at the
// help; nothing of package flag's wording ("-bogus", "parse error")
// shows. Whole seconds are durations.
func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "etcdlock run: unknown flag --bogus (see 'etcdlock help run')\n"},
		{[]string{"-bogus"}, "etcdlock run: unknown flag --bogus (see 'etcdlock help run')\n"},
		{[]string{"--ttl"}, "etcdlock run: flag --ttl needs a value (see 'etcdlock help run')\n"},
		{[]string{"--ttl", "abc"}, `etcdlock run: invalid value "abc" for --ttl: not a duration (say 10s, 1m30s, 500ms, or whole seconds: 10) (see 'etcdlock help run')` + "\n"},
		{[]string{"-n", "x"}, `etcdlock run: invalid value "x" for -n: not a whole number (see 'etcdlock help run')` + "\n"},
		{[]string{"--verbose=maybe"}, `etcdlock run: invalid value "maybe" for --verbose: want true or false (see 'etcdlock help run')` + "\n"},
		{[]string{"extra"}, `etcdlock run: unexpected argument "extra" (see 'etcdlock help run')` + "\n"},
	} {
		var stdout, stderr bytes.Buffer
		if code := testCmd().Exec(context.Background(), tc.args, &stdout, &stderr); code != ExitUsage || stderr.String() != tc.want {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
	for arg, want := range map[string]string{"2": "2s", "0": "0s", "1500ms": "1.5s", "1m": "1m0s"} {
		var stdout, stderr bytes.Buffer
		if code := testCmd().Exec(context.Background(), []string{"--ttl", arg}, &stdout, &stderr); code != ExitOK || stdout.String() != want {
			t.Errorf("--ttl %s: exit %d, got %q, stderr %q; want %s", arg, code, stdout.String(), stderr.String(), want)
		}
	}
	if _, err := ParseDuration("99999999999999999"); err == nil {
		t.Error("ParseDuration of more seconds than a Duration holds succeeded")
	}
}

// TestReportOnePrefix: an error of the lock package, wrapped by the
// command, is one line with one prefix: the command's.
func TestReportOnePrefix(t *testing.T) {
	lost := &lock.LostError{Token: fencing.Token{Key: "etcdlock/mutex/x/1", Revision: 13}, Cause: lock.ErrDeadline}
	err := fmt.Errorf("releasing lock %q: %w", "x", errors.Join(fmt.Errorf("%w: %w", lock.ErrNotHeld, lost), errors.New("lock: closed")))
	var stderr bytes.Buffer
	if code := testCmd().Report(&stderr, err, ExitFailure); code != ExitFailure {
		t.Errorf("exit %d", code)
	}
	want := `etcdlock run: releasing lock "x": not held: hold 13@etcdlock/mutex/x/1 lost: lease renewal deadline passed; closed` + "\n"
	if stderr.String() != want {
		t.Errorf("Report wrote %q, want %q", stderr.String(), want)
	}
	// etcd's own prefix stays: it is the documented text of its errors.
	if got := OneLine("election: etcdserver: permission denied"); got != "etcdserver: permission denied" {
		t.Errorf("OneLine = %q", got)
	}
}
