//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/etcdlock/etcdlock/integration"

	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/internal/nemesis"
)

// asMainEnv set to 1 makes the test binary the command itself, for the
// tests that run it as a process.
const asMainEnv = "ETCDLOCK_NEMESIS_TEST_AS_MAIN"

// TestMain fails the package's tests if they leave goroutines behind.
func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main() // never returns
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(integration.GoleakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// proc is the command run as a process of its own.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout bytes.Buffer
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
}

// lockedWriter writes to p.stderr under p.mu.
type lockedWriter struct{ p *proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.stderr.Write(b)
}

// start runs the command with args; cleanup kills it if it still runs.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(os.Args[0], args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), asMainEnv+"=1")
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// errText returns what the command wrote to stderr so far.
func (p *proc) errText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// wait returns the command's exit status, failing the test if it does not
// exit within d.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		p.t.Fatalf("still running after %v; stderr tail %q", d, tail(p.errText()))
		return -1
	}
}

// waitFor polls cond, the command's output being a file no event tells of,
// for up to d.
func (p *proc) waitFor(d time.Duration, what string, cond func() bool) {
	p.t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			p.t.Fatalf("no %s within %v; stderr tail %q", what, d, tail(p.errText()))
		}
	}
}

// TestNemesisSignal: the first SIGTERM ends the fault suite's schedule;
// the suite undoes its faults, prints the report of what ran, marked
// interrupted, and exits 143.
func TestNemesisSignal(t *testing.T) {
	p := start(t, "--duration", "10m", "--json", "--v", "--out", t.TempDir())
	p.waitFor(2*time.Minute, "the suite's first fault", func() bool {
		return strings.Contains(p.errText(), "fault start")
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(2 * time.Minute); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit status %d, want %d; stderr tail %q", code, 128+int(syscall.SIGTERM), tail(p.errText()))
	}
	out := p.stdout.Bytes()
	var rep struct {
		Interrupted bool `json:"interrupted"`
		Valid       bool `json:"valid"`
		Rows        []struct {
			CriticalSections int `json:"critical_sections"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report: %v\nstdout: %q\nstderr tail: %q", err, out, tail(p.errText()))
	}
	if !rep.Interrupted || rep.Valid || len(rep.Rows) == 0 {
		t.Errorf("report: interrupted %v, valid %v, %d rows; want an invalid, interrupted report with rows",
			rep.Interrupted, rep.Valid, len(rep.Rows))
	}
	if !strings.Contains(p.errText(), "the report covers what ran") {
		t.Errorf("stderr tail %q does not say the report is partial", tail(p.errText()))
	}
}

// superviseNemesis: a first signal ends the run's context and the report
// it then returns comes back with the interruption; a second signal, or
// the grace passing, while the suite still undoes its faults returns at
// once without a report; a context ended without a signal counts as
// SIGTERM.
func TestSuperviseNemesis(t *testing.T) {
	type step int
	const (
		report step = iota // the run reports once its context ends
		hang               // the run hangs after its context ends, until released
	)
	for _, tc := range []struct {
		name    string
		run     step
		signals []os.Signal // sent one by one, each after the run's context ended
		cancel  bool        // end the parent context instead of a first signal
		grace   time.Duration
		report  bool
		status  int
	}{
		{"one signal", report, []os.Signal{syscall.SIGINT}, false, time.Minute, true, 130},
		{"second signal", hang, []os.Signal{syscall.SIGTERM, syscall.SIGINT}, false, time.Minute, false, 130},
		{"grace passes", hang, []os.Signal{syscall.SIGTERM}, false, 50 * time.Millisecond, false, 143},
		{"context ends", report, nil, true, time.Minute, true, 143},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sigs := make(chan os.Signal, 4)
			ended, release, exited := make(chan struct{}), make(chan struct{}), make(chan struct{})
			defer func() { close(release); <-exited }()
			run := func(ctx context.Context) (*nemesis.Report, error) {
				defer close(exited)
				<-ctx.Done()
				close(ended)
				if tc.run == hang {
					<-release
				}
				return &nemesis.Report{Interrupted: true}, nil
			}
			type out struct {
				rep  *nemesis.Report
				intr *cmdline.Interrupted
				err  error
			}
			res := make(chan out, 1)
			go func() {
				rep, intr, err := superviseNemesis(ctx, sigs, tc.grace, run)
				res <- out{rep, intr, err}
			}()
			if tc.cancel {
				cancel()
			}
			for i, sig := range tc.signals {
				sigs <- sig
				if i == 0 {
					<-ended
				}
			}
			r := <-res
			if r.err != nil || r.intr == nil || r.intr.Status() != tc.status || (r.rep != nil) != tc.report {
				t.Fatalf("report %v, interruption %v, err %v; want report %v, status %d", r.rep, r.intr, r.err, tc.report, tc.status)
			}
		})
	}
}

// tail returns the last lines of s.
func tail(s string) string {
	if i := len(s) - 2000; i > 0 {
		return s[i:]
	}
	return s
}
