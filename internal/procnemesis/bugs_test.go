//go:build etcdlock_bugs

package procnemesis

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestPlantedBugs runs the suite briefly once per planted bug that the
// process-level faults expose, with every worker running with the bug, and
// requires violations. The two others (UnlockByName, ReceiveTimeDeadline)
// need a client's requests delayed or dropped at chosen moments: the
// targeted scenarios of internal/nemesis catch them.
func TestPlantedBugs(t *testing.T) {
	for _, tc := range []struct {
		bug  string
		must bool
	}{
		{"LeaseIDToken", true},       // every grant's token is wrong
		{"SkipOwnershipCheck", true}, // a waiter gives up while a frozen holder holds
	} {
		t.Run(tc.bug, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			rep, err := Run(ctx, Config{Bug: tc.bug, Duration: 25 * time.Second, Warmup: 3 * time.Second,
				Shards: 3, Runs: 1, Seed: *seed})
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
			if tc.must && rep.Violations == 0 {
				t.Errorf("planted bug %s not caught (seed %d)", tc.bug, rep.Seed)
			}
		})
	}
}
