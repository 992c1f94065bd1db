//go:build etcdlock_bugs

package procnemesis

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPlantedBugs runs the suite briefly once per planted bug, with every
// worker running with the bug, and requires violations. The binaries are
// built once, with the bugs compiled in.
func TestPlantedBugs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "bin")
	if err := build(ctx, bin, true); err != nil {
		t.Fatal(err)
	}
	const s = time.Second
	for _, tc := range []struct {
		bug, how      string
		ttl, duration time.Duration
	}{
		{"LeaseIDToken", "every grant's token is wrong", 2 * s, 10 * s},
		{"SkipOwnershipCheck", "a waiter behind one that gave up is granted while a frozen holder holds", 2 * s, 20 * s},
		{"UnlockByName", "an Unlock that timed out after it landed, retried after the next Lock on the same lease, deletes the newer hold", 2 * s, 20 * s},
		// The lateness the slow-holder fault shows is 0.15 TTL less up
		// to 500 ms: past checker (1)'s tolerance with a TTL of 4 s. Each
		// such fault takes some 20 s: 30 s leave room for two.
		{"ReceiveTimeDeadline", "a slow holder's lease expires while it holds, and it is told late", 4 * s, 30 * s},
	} {
		t.Run(tc.bug, func(t *testing.T) {
			rep, err := Run(ctx, Config{Bug: tc.bug, Duration: tc.duration, Warmup: 2 * time.Second,
				Shards: 4, Runs: 1, TTL: tc.ttl, Seed: *seed, bin: bin})
			if err != nil {
				t.Fatal(err)
			}
			var by []string
			for _, row := range rep.Rows {
				for c, n := range row.Violations {
					if n > 0 {
						by = append(by, row.Lock+":"+c)
					}
				}
			}
			first := ""
			if len(rep.Findings) > 0 {
				first = rep.Findings[0].What
				if len(first) > 200 {
					first = first[:200] + "..."
				}
			}
			t.Logf("%s: %d violations (%s), seed %d; first: %s", tc.bug, rep.Violations, strings.Join(by, " "), rep.Seed, first)
			if rep.Violations == 0 {
				t.Errorf("planted bug %s (%s) not caught (seed %d)", tc.bug, tc.how, rep.Seed)
			}
		})
	}
}
