package nemesis

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/etcdlock/etcdlock/integration/embedded"
)

// Report is the outcome of Run. Its JSON form has the keys seed,
// critical_sections, stale_rejected, lease_expiries, violations,
// control_lost_updates, seeded_bugs_caught, seeded_bugs_total and valid,
// followed by the details (rows, seeded_bugs, faults, ...).
type Report struct {
	// Seed replays the run's random choices (Config.Seed).
	Seed int64 `json:"seed"`
	// CriticalSections is the number of critical sections completed (an
	// accepted write, or an accepted read of a reader) in every workload.
	CriticalSections int `json:"critical_sections"`
	// StaleRejected is the number of accesses the fenced resources refused.
	StaleRejected int `json:"stale_rejected"`
	// LeaseExpiries is the number of holds whose key was deleted by the
	// end of their lease while their holder had not asked to unlock.
	LeaseExpiries int `json:"lease_expiries"`
	// Violations is the number of violations found by all checkers (the
	// control's lost updates and non-linearizable history excluded, and
	// the seeded bugs' runs with the bug on excluded).
	Violations int `json:"violations"`
	// ControlLostUpdates is the number of acknowledged increments the
	// unfenced controls lost.
	ControlLostUpdates int `json:"control_lost_updates"`
	// SeededBugsCaught of SeededBugsTotal seeded bugs made a checker fail.
	SeededBugsCaught int `json:"seeded_bugs_caught"`
	SeededBugsTotal  int `json:"seeded_bugs_total"`
	// SeededBugsSkipped says why the seeded bugs did not run: they are
	// compiled in only with the build tag etcdlock_bugs.
	SeededBugsSkipped string `json:"seeded_bugs_skipped,omitempty"`
	// Valid is false when the run cannot vouch for anything: too little
	// traffic before the first fault, a phase in which no fault ran, a
	// client pause that let no lease expire, a gap in the watcher's
	// history, or a porcupine check that timed out. InvalidReasons says
	// which.
	Valid          bool     `json:"valid"`
	InvalidReasons []string `json:"invalid_reasons,omitempty"`
	// Interrupted is set when the run's context ended before the run did
	// (a signal, in the command): the report covers what ran until then,
	// and the run is not valid.
	Interrupted bool `json:"interrupted,omitempty"`
	// StuckFault names the fault that did not return within
	// Config.StuckAfter ("phase: name"), if one did not; the run stopped
	// there and is not valid, and StuckDump is the file holding every
	// goroutine's stack taken then.
	StuckFault string `json:"stuck_fault,omitempty"`
	StuckDump  string `json:"stuck_dump,omitempty"`

	Tier     Tier          `json:"tier"`
	Duration time.Duration `json:"duration_ns"`
	TTL      time.Duration `json:"ttl_ns"`
	// Rows has one row per fault phase and workload.
	Rows []Row `json:"rows"`
	// SeededBugs has one entry per seeded bug.
	SeededBugs []BugResult `json:"seeded_bugs"`
	// Faults lists every fault injected.
	Faults []embedded.FaultRecord `json:"faults"`
	// Findings lists violations (at most 50).
	Findings []Finding `json:"findings,omitempty"`
	// Notes lists what went wrong without bearing on the verdict, such as
	// a Close that failed through a connection a fault had broken.
	Notes []string `json:"notes,omitempty"`
	// OutDir is where a failed run wrote its histories, or "".
	OutDir string `json:"out_dir,omitempty"`
}

// Row is one workload under one fault phase.
type Row struct {
	Workload string `json:"workload"`
	Fault    string `json:"fault"`
	// FaultsInjected counts the faults of this phase that touched the
	// workload (member faults touch every workload).
	FaultsInjected   int `json:"faults_injected"`
	WarmupSections   int `json:"warmup_sections"`
	CriticalSections int `json:"critical_sections"`
	StaleRejected    int `json:"stale_rejected"`
	LeaseExpiries    int `json:"lease_expiries"`
	HolderPauses     int `json:"holder_pauses"`
	// longPauses are the holder pauses that lasted their full 2 TTL or
	// more: each must let the holder's lease expire.
	longPauses int
	// Porcupine is LinOK, LinIllegal, LinTimeout, LinNone (no register) or,
	// for a control, LinExpected.
	Porcupine string `json:"porcupine"`
	// Violations counts violations by checker (CheckGrants, ...).
	Violations map[string]int `json:"violations"`
	// ControlLostUpdates is set for the controls only.
	ControlLostUpdates int      `json:"control_lost_updates"`
	Valid              bool     `json:"valid"`
	Invalid            []string `json:"invalid,omitempty"`

	findings []Finding
	grants   []*Grant
	accesses []Access
	observed []Observation
	strict   bool
}

// BugResult is the outcome of one seeded bug's scenario, run once with the
// bug's switch off (it must pass) and once with it on (a checker must fail).
type BugResult struct {
	Bug string `json:"bug"`
	// Caught is true when a checker other than the clean-up check failed
	// with the bug on: a key left behind is no proof that the checkers of
	// the library's promises see the bug.
	Caught bool `json:"caught"`
	// Checkers are those that failed with the bug on.
	Checkers []string `json:"checkers,omitempty"`
	// Finding is the first violation found with the bug on.
	Finding string `json:"finding,omitempty"`
	// CleanWithoutBug is true when no checker failed with the bug off.
	CleanWithoutBug bool `json:"clean_without_bug"`
	// Scenario says what the scenario does.
	Scenario string `json:"scenario"`
	Err      string `json:"err,omitempty"`
}

// Table writes the report as two tables: per fault phase and workload,
// and the seeded bugs.
func (r *Report) Table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "fault\tworkload\tfaults\tcritical sections\tstale rejected\tlease expiries\tporcupine\t")
	for _, c := range checkers {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintf(tw, "control lost\tvalid\t\n")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t", row.Fault, row.Workload, row.FaultsInjected,
			row.CriticalSections, row.StaleRejected, row.LeaseExpiries, row.Porcupine)
		for _, c := range checkers {
			fmt.Fprintf(tw, "%d\t", row.Violations[c])
		}
		lost := "-"
		if isControl(row.Workload) {
			lost = fmt.Sprint(row.ControlLostUpdates)
		}
		valid := "yes"
		if !row.Valid {
			valid = "NO: " + strings.Join(row.Invalid, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", lost, valid)
	}
	fmt.Fprintf(tw, "total\t\t%d\t%d\t%d\t%d\t\t", len(r.Faults), r.CriticalSections, r.StaleRejected, r.LeaseExpiries)
	for range checkers {
		fmt.Fprintf(tw, "\t")
	}
	fmt.Fprintf(tw, "%d\t\t\n", r.ControlLostUpdates)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if r.SeededBugsSkipped != "" {
		fmt.Fprintf(w, "seeded bugs skipped: %s\n", r.SeededBugsSkipped)
	}
	fmt.Fprintf(tw, "seeded bug\tcaught\tby\tclean without it\tfinding\n")
	for _, b := range r.SeededBugs {
		caught := "NO"
		if b.Caught {
			caught = "yes"
		}
		clean := "yes"
		if !b.CleanWithoutBug {
			clean = "NO"
		}
		f := b.Finding
		if b.Err != "" {
			f = "error: " + b.Err
		}
		if len(f) > 110 {
			f = f[:110] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Bug, caught, strings.Join(b.Checkers, ","), clean, f)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nseed %d, %s tier, %v of faults, TTL %v: %d violations, %d/%d seeded bugs caught, valid %v\n",
		r.Seed, r.Tier, r.Duration, r.TTL, r.Violations, r.SeededBugsCaught, r.SeededBugsTotal, r.Valid)
	if r.Interrupted {
		fmt.Fprintf(w, "  interrupted: the report covers what ran until then\n")
	}
	for _, s := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", s)
	}
	for _, s := range r.InvalidReasons {
		fmt.Fprintf(w, "  invalid: %s\n", s)
	}
	for _, f := range r.Findings {
		fmt.Fprintf(w, "  violation (%s): %s\n", f.Checker, f.What)
	}
	if r.OutDir != "" {
		fmt.Fprintf(w, "histories written to %s\n", r.OutDir)
	}
	return nil
}
