//go:build unix

package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/internal/nemesis"
)

// TestNemesisSignal: the first SIGTERM ends the fault suite's schedule;
// the suite undoes its faults, prints the report of what ran, marked
// interrupted, and exits 143.
func TestNemesisSignal(t *testing.T) {
	e := newE2E(t)
	p := e.start("N", "nemesis", "--duration", "10m", "--json", "--v", "--out", t.TempDir())
	e.waitFor(2*time.Minute, "the suite's first fault", func() bool {
		return strings.Contains(p.errText(), "fault start")
	})
	p.signal(syscall.SIGTERM)
	p.expect(128+int(syscall.SIGTERM), 2*time.Minute)
	out, err := os.ReadFile(p.stdout)
	if err != nil {
		t.Fatal(err)
	}
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
				intr *interrupted
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
			if r.err != nil || r.intr == nil || r.intr.status() != tc.status || (r.rep != nil) != tc.report {
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
