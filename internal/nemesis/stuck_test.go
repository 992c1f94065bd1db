package nemesis

import (
	"context"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/etcdlock/etcdlock/integration"
)

// A fault that does not return within StuckAfter stops the run: the report
// is invalid, names the fault and the seed, points at a goroutine dump
// that shows the stuck call, and has no phase after the stuck one; Run
// returns although the fault still hangs.
func TestStuckFaultStopsRun(t *testing.T) {
	c := integration.NewCluster(t, 3, integration.WithoutFsync())
	release := make(chan struct{})
	var calls atomic.Int32
	hang := integration.Fault{Name: "hang", Inject: func(ctx context.Context, _ *rand.Rand) (string, error) {
		if calls.Add(1) == 1 {
			hangHere(release)
		}
		return "", nil
	}}
	cfg := Config{
		Duration: 20 * time.Second,
		Seed:     4242,
		// Compaction runs no schedule of its own: only the hanging fault
		// can be stuck.
		Faults:         []string{FaultCompaction, FaultPauseMember},
		Workloads:      []string{WorkloadMutexExt},
		SkipSeededBugs: true,
		OutDir:         t.TempDir(),
		Logger:         zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		Cluster:        c,
		StuckAfter:     2 * time.Second,
		extraFault:     &hang,
	}
	rep, err := Run(context.Background(), cfg)
	close(release)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Valid || rep.StuckFault != FaultCompaction+": hang" {
		t.Fatalf("valid %v, stuck fault %q; want an invalid run stuck in %q", rep.Valid, rep.StuckFault, FaultCompaction+": hang")
	}
	reasons := strings.Join(rep.InvalidReasons, "\n")
	if !strings.Contains(reasons, "hang") || !strings.Contains(reasons, "4242") || !strings.Contains(reasons, rep.StuckDump) {
		t.Errorf("invalid reasons do not name the fault, the seed and the dump:\n%s", reasons)
	}
	dump, err := os.ReadFile(rep.StuckDump)
	if err != nil {
		t.Fatalf("goroutine dump: %v", err)
	}
	if !strings.Contains(string(dump), "nemesis.hangHere") {
		t.Errorf("the goroutine dump does not show the stuck call:\n%.2000s", dump)
	}
	for _, row := range rep.Rows {
		if row.Fault != FaultCompaction {
			t.Errorf("a row of phase %s, after the stuck phase", row.Fault)
		}
	}
	stuck := 0
	for _, f := range rep.Faults {
		if f.Stuck {
			stuck++
		}
	}
	if stuck != 1 {
		t.Errorf("%d fault records marked stuck, want 1", stuck)
	}
}

// hangHere blocks until release is closed: the stuck call the dump shows.
//
//go:noinline
func hangHere(release <-chan struct{}) { <-release }
