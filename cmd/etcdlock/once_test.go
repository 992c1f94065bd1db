//go:build unix

package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRunMinHold runs a quick job under --min-hold from three "replicas":
// the first runs it, the second (within the minimum) skips it with exit 0,
// and the third, after the minimum, runs it again. --max-hold stops a job
// that runs too long.
func TestRunMinHold(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	t.Cleanup(e.requireEmpty)
	ran := filepath.Join(e.dir, "ran")
	job := func(tag string) *proc {
		return e.start(tag, "run", "--min-hold", "2s", "job", "--", "sh", "-c", "echo "+tag+" >> "+ran)
	}
	job("A").expect(exitOK, time.Minute)
	if n := e.keys("mutex/"); n != 1 {
		t.Fatalf("%d keys after the first run, want its key kept for the minimum", n)
	}
	job("B").expect(exitOK, time.Minute)
	e.waitKeys(10*time.Second, "mutex/", 0) // the minimum passed
	job("C").expect(exitOK, time.Minute)
	e.waitKeys(10*time.Second, "mutex/", 0)
	b, err := os.ReadFile(ran)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(b)); !slices.Equal(got, []string{"A", "C"}) {
		t.Fatalf("the job ran in %v, want A and C", got)
	}

	e.start("M", "run", "--max-hold", "1s", "long", "--", "sleep", "30").expect(exitLost, time.Minute)

	for _, args := range [][]string{
		{"--min-hold", "0s"},
		{"--max-hold", "-1s"},
		{"--min-hold", "2s", "--max-hold", "1s"},
		{"--min-hold", "2s", "--timeout", "1s"},
	} {
		args = append(append([]string{"run", "--endpoints", e.srv.Endpoint(), "--namespace", e.ns}, args...), "x", "--", "true")
		if code, _, errOut := runCmd(t, time.Minute, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d: %s", args, code, exitUsage, errOut)
		}
	}
}
