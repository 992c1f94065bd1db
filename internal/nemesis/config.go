package nemesis

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/integration/embedded"
)

// Tier selects the faults a run goes through.
type Tier string

// Tiers.
const (
	// TierShort runs the client-pause and member-restart phases with
	// every workload but the SQL ones: the CI tier. (CI runs the SQL
	// workloads apart, under client pauses.)
	TierShort Tier = "short"
	// TierFull runs a phase of every fault, and a last phase that mixes
	// them all, with every workload.
	TierFull Tier = "full"
)

// Fault phases, the values of Config.Faults and Row.Fault. A run goes
// through its phases one after the other; every workload runs in every
// phase, on fresh keys, under that phase's faults only.
const (
	// FaultClientPause pauses a holder inside its critical section: its
	// proxies are paused and its worker blocked between its read and its
	// write for 0.5 to 3 TTL, one holder per workload at a time.
	FaultClientPause = "client-pause"
	// FaultBlackholeClient drops the traffic of a random worker's proxies
	// for 0.5 to 3 TTL.
	FaultBlackholeClient = "blackhole-client"
	// FaultRestartMember stops a random member (leader or follower) without
	// coordination and restarts it 0.2 to 1.5 s later.
	FaultRestartMember = "restart-member"
	// FaultPartitionLeader isolates the leader from the other members for
	// 0.5 to 2 s.
	FaultPartitionLeader = "partition-leader"
	// FaultMoveLeader transfers leadership to the next member, repeatedly.
	FaultMoveLeader = "move-leader"
	// FaultPauseMember pauses a random member's raft traffic for 0.3 to
	// 1.5 s.
	FaultPauseMember = "pause-member"
	// FaultCompaction compacts the keyspace every 200 ms (never above what
	// the healthy watcher has read).
	FaultCompaction = "compaction"
	// FaultMixed runs the member faults, the client faults and compaction
	// at once, each chosen at random.
	FaultMixed = "mixed"
)

// AllFaults lists every fault phase, in the order of the full tier.
var AllFaults = []string{FaultClientPause, FaultBlackholeClient, FaultRestartMember, FaultPartitionLeader,
	FaultMoveLeader, FaultPauseMember, FaultCompaction, FaultMixed}

// Defaults.
const (
	DefaultTTL      = time.Second
	DefaultDuration = 2 * time.Minute
	// DefaultWarmup is the fault-free start of each phase.
	DefaultWarmup = 2 * time.Second
	// MinWarmupSections is the fewest critical sections a workload must
	// complete in a phase's warm-up for the phase to be valid. A warm-up
	// goes on past Warmup (by up to half of the rest of the phase) while
	// a workload has completed fewer.
	MinWarmupSections = 3
	// CompactionPeriod is the period of the compaction fault.
	CompactionPeriod = 200 * time.Millisecond
)

// Config configures Run.
type Config struct {
	// Duration is the time spent in the fault phases, shared equally
	// among them (checks and seeded bugs come on top). Optional, defaults
	// to DefaultDuration.
	Duration time.Duration
	// Seed seeds every random choice of the run (fault order, targets,
	// durations, gaps). Optional: 0 picks one from the clock; the report
	// says which.
	Seed int64
	// Tier picks the fault phases. Optional, defaults to TierFull.
	Tier Tier
	// Faults, if set, are the fault phases to run instead of the tier's.
	Faults []string
	// Workloads, if set, are the workloads to run instead of the tier's.
	Workloads []string
	// TTL is the lease TTL of every lock and election: whole seconds, at
	// least 1s. Optional, defaults to DefaultTTL.
	TTL time.Duration
	// Warmup is the fault-free start of each phase. Optional, defaults to
	// DefaultWarmup (less for short phases).
	Warmup time.Duration
	// OutDir is where a failed run writes its histories, watcher events,
	// fault log and porcupine visualizations, in a subdirectory named
	// after the seed. Optional: the system's temporary directory.
	OutDir string
	// Logger logs faults and progress. Optional, defaults to no logging.
	Logger *zap.Logger
	// SkipSeededBugs skips the seeded-bug scenarios.
	SkipSeededBugs bool
	// SeededBugsOnly runs the seeded-bug scenarios alone, without the
	// fault phases (for a test that runs them on a quiet machine).
	SeededBugsOnly bool
	// Cluster, if set, is the 3-member cluster to run on (for tests);
	// otherwise Run starts its own (without fsync) and closes it.
	Cluster *embedded.Cluster
	// StuckAfter bounds each fault, its undo included: one still running
	// after it stops the run (see Report.StuckFault). Optional, defaults
	// to embedded.DefaultStuckAfter.
	StuckAfter time.Duration

	// extraFault, if set, joins every phase's faults in a lane of its own
	// (for tests of the stuck-fault path).
	extraFault *embedded.Fault
}

func (c Config) phases() []string {
	if len(c.Faults) > 0 {
		return c.Faults
	}
	if c.Tier == TierShort {
		return []string{FaultClientPause, FaultRestartMember}
	}
	return AllFaults
}

func (c Config) workloads() []string {
	if len(c.Workloads) > 0 {
		return c.Workloads
	}
	if c.Tier == TierShort {
		// Six more workers would load CI's two cores during the whole
		// tier: the SQL workloads run in a test of their own, and so
		// does mutex-lockdelay.
		return slices.DeleteFunc(slices.Clone(AllWorkloads), func(w string) bool { return isSQL(w) || w == WorkloadLockDelay })
	}
	return AllWorkloads
}

func (c Config) withDefaults() (Config, error) {
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Tier == "" {
		c.Tier = TierFull
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.StuckAfter == 0 {
		c.StuckAfter = embedded.DefaultStuckAfter
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano() % 1_000_000_000
	}
	var errs []error
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("nemesis: negative duration %v", c.Duration))
	}
	if c.TTL < time.Second || c.TTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("nemesis: TTL %v is not a whole number of seconds >= 1s", c.TTL))
	}
	if c.StuckAfter < 0 {
		errs = append(errs, fmt.Errorf("nemesis: negative StuckAfter %v", c.StuckAfter))
	}
	if c.SkipSeededBugs && c.SeededBugsOnly {
		errs = append(errs, errors.New("nemesis: SkipSeededBugs and SeededBugsOnly leave nothing to run"))
	}
	if c.Tier != TierShort && c.Tier != TierFull {
		errs = append(errs, fmt.Errorf("nemesis: unknown tier %q", c.Tier))
	}
	for _, f := range c.Faults {
		if !slices.Contains(AllFaults, f) {
			errs = append(errs, fmt.Errorf("nemesis: unknown fault %q", f))
		}
	}
	for _, w := range c.Workloads {
		if !slices.Contains(AllWorkloads, w) {
			errs = append(errs, fmt.Errorf("nemesis: unknown workload %q", w))
		}
	}
	if c.Cluster != nil && len(c.Cluster.Members()) < 3 {
		errs = append(errs, errors.New("nemesis: the cluster needs 3 members"))
	}
	phase := c.Duration / time.Duration(len(c.phases()))
	if c.Warmup == 0 {
		c.Warmup = min(DefaultWarmup, phase/4)
	}
	if c.Warmup <= 0 || c.Warmup >= phase {
		errs = append(errs, fmt.Errorf("nemesis: warm-up %v does not fit in a phase of %v", c.Warmup, phase))
	}
	return c, errors.Join(errs...)
}
