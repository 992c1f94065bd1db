package procnemesis

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/etcdlock/etcdlock/internal/nemesis"
)

// Report is the outcome of Run, in the manner of internal/nemesis's. Its
// JSON form leads with the totals.
type Report struct {
	Seed int64 `json:"seed"`
	// Bug is Config.Bug: the planted bug the workers ran with, if any.
	Bug      string        `json:"bug,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	TTL      time.Duration `json:"ttl_ns"`
	// Fsync is always true: the members sync their WAL and backend.
	Fsync   bool `json:"fsync"`
	Members int  `json:"members"`
	// CriticalSections counts the critical sections whose write to the
	// etcd fenced counter was accepted; SQLCriticalSections, those whose
	// write to the SQL fenced counter was.
	CriticalSections    int `json:"critical_sections"`
	SQLCriticalSections int `json:"sql_critical_sections"`
	// StaleRejected counts the accesses the two fences refused.
	StaleRejected int `json:"stale_rejected"`
	// LeaseExpiries counts holds whose key its lease's end deleted while
	// their holder had not asked to unlock.
	LeaseExpiries int `json:"lease_expiries"`
	// EarlyRevocations are the lease expiries that etcd made before the
	// TTL it had acknowledged to the holder, which the timing checks
	// would have flagged, whose holders were told by that TTL's end (see
	// nemesis.CheckLock): etcd's, not the library's, and what the fences
	// are for.
	EarlyRevocations []string `json:"early_revocations,omitempty"`
	// Violations counts the findings of every checker (the control's lost
	// updates excluded), the frozen holders' late writes accepted, the
	// children that outlived a killed etcdlock run and the processes left
	// at the end.
	Violations int `json:"violations"`
	// ControlLostUpdates counts acknowledged increments the unfenced
	// control counters lost.
	ControlLostUpdates int `json:"control_lost_updates"`
	// HolderProcesses counts the holder processes started (workers and
	// etcdlock runs).
	HolderProcesses int `json:"holder_processes"`
	// FrozenHolders counts holders frozen in their critical section;
	// FrozenPastTTL, those frozen for at least their TTL and until a
	// newer holder had been admitted. Their writes after they resumed to
	// the fenced counters: FrozenLateRefused refused, FrozenLateAccepted
	// accepted (each a violation), FrozenLateUnknown of unknown outcome.
	FrozenHolders      int `json:"frozen_holders"`
	FrozenPastTTL      int `json:"frozen_past_ttl"`
	FrozenLateRefused  int `json:"frozen_late_writes_refused"`
	FrozenLateAccepted int `json:"frozen_late_writes_accepted"`
	FrozenLateUnknown  int `json:"frozen_late_writes_unknown"`
	// FrozenAllRefused counts the holders frozen past their TTL whose
	// late write to each fenced counter was refused in the end (a write
	// of unknown outcome is retried).
	FrozenAllRefused int `json:"frozen_all_refused"`
	// RunsKilled counts etcdlock runs SIGKILLed in their job;
	// RunChildrenOutlived, those whose shell or job outlived them by 5 s.
	RunsKilled          int `json:"runs_killed"`
	RunChildrenOutlived int `json:"run_children_outlived"`
	// FaultCounts counts the faults by kind; LeaderFaults, those that hit
	// the member leading then.
	FaultCounts  map[string]int `json:"fault_counts"`
	LeaderFaults int            `json:"leader_faults"`
	// Valid is false when the run cannot vouch for anything; see
	// InvalidReasons.
	Valid          bool     `json:"valid"`
	InvalidReasons []string `json:"invalid_reasons,omitempty"`
	// Interrupted: the context ended before the faults did.
	Interrupted bool `json:"interrupted,omitempty"`
	// ClockDrift is how far the wall clock (the holders' times) moved
	// from the monotonic clock (the watcher's) over the run.
	ClockDrift time.Duration `json:"clock_drift_ns"`
	// TornLines counts history lines cut short by a SIGKILL.
	TornLines int `json:"torn_lines"`

	Rows      []Row             `json:"rows"`
	Freezes   []frozen          `json:"freezes"`
	Faults    []FaultRecord     `json:"faults"`
	Findings  []nemesis.Finding `json:"findings,omitempty"`
	Notes     []string          `json:"notes,omitempty"`
	Leftovers []string          `json:"leftovers,omitempty"`
	Outlived  []string          `json:"outlived,omitempty"`
	// OutDir is where a failed run without Config.Dir left its histories
	// and logs (the members' data removed), or "".
	OutDir string `json:"out_dir,omitempty"`
}

// Row is one lock and its counters.
type Row struct {
	Lock                string         `json:"lock"`
	Holders             int            `json:"holders"`
	Grants              int            `json:"grants"`
	CriticalSections    int            `json:"critical_sections"`
	SQLCriticalSections int            `json:"sql_critical_sections"`
	StaleRejected       int            `json:"stale_rejected"`
	LeaseExpiries       int            `json:"lease_expiries"`
	PorcupineEtcd       string         `json:"porcupine_etcd"`
	PorcupineSQL        string         `json:"porcupine_sql"`
	Violations          map[string]int `json:"violations"`
	ControlLostUpdates  int            `json:"control_lost_updates"`
}

// Table writes the report as a table per lock and a summary.
func (r *Report) Table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "lock\tholders\tgrants\tsections (etcd)\tsections (sql)\tstale rejected\tlease expiries\tporcupine etcd\tporcupine sql\tviolations\tcontrol lost\t\n")
	for _, row := range r.Rows {
		v := 0
		for _, n := range row.Violations {
			v += n
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%d\t\n", row.Lock, row.Holders, row.Grants,
			row.CriticalSections, row.SQLCriticalSections, row.StaleRejected, row.LeaseExpiries,
			row.PorcupineEtcd, row.PorcupineSQL, v, row.ControlLostUpdates)
	}
	fmt.Fprintf(tw, "total\t%d\t\t%d\t%d\t%d\t%d\t\t\t\t%d\t\n", r.HolderProcesses, r.CriticalSections,
		r.SQLCriticalSections, r.StaleRejected, r.LeaseExpiries, r.ControlLostUpdates)
	if err := tw.Flush(); err != nil {
		return err
	}
	kinds := make([]string, 0, len(r.FaultCounts))
	for k := range r.FaultCounts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var fc []string
	for _, k := range kinds {
		fc = append(fc, fmt.Sprintf("%s %d", k, r.FaultCounts[k]))
	}
	fmt.Fprintf(w, "\nfaults: %s (%d hit the leader)\n", strings.Join(fc, ", "), r.LeaderFaults)
	fmt.Fprintf(w, "frozen holders: %d, %d past their TTL until a newer holder was admitted, %d with every late fenced write refused in the end; late fenced writes: %d refused, %d accepted, %d unknown (then retried)\n",
		r.FrozenHolders, r.FrozenPastTTL, r.FrozenAllRefused, r.FrozenLateRefused, r.FrozenLateAccepted, r.FrozenLateUnknown)
	fmt.Fprintf(w, "etcdlock runs killed in their job: %d, children that outlived them: %d\n", r.RunsKilled, r.RunChildrenOutlived)
	fmt.Fprintf(w, "seed %d, %v of faults, TTL %v, fsync on, %d members: %d violations, valid %v (clock drift %v)\n",
		r.Seed, r.Duration, r.TTL, r.Members, r.Violations, r.Valid, r.ClockDrift)
	if r.Interrupted {
		fmt.Fprintf(w, "  interrupted: the report covers what ran until then\n")
	}
	for _, s := range r.InvalidReasons {
		fmt.Fprintf(w, "  invalid: %s\n", s)
	}
	for _, s := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", s)
	}
	if n := len(r.EarlyRevocations); n > 0 {
		fmt.Fprintf(w, "  etcd ended %d leases before the TTL it had acknowledged (etcd-io/etcd#15247), whose holders were told too late for the timing checks but by that TTL's end:\n", n)
		for _, e := range r.EarlyRevocations {
			fmt.Fprintf(w, "    %s\n", e)
		}
	}
	for _, f := range r.Findings {
		fmt.Fprintf(w, "  violation (%s): %s\n", f.Checker, f.What)
	}
	for _, s := range r.Leftovers {
		fmt.Fprintf(w, "  violation (leftover process): %s\n", s)
	}
	if r.OutDir != "" {
		fmt.Fprintf(w, "histories and logs kept in %s\n", r.OutDir)
	}
	return nil
}
