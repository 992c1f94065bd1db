package nemesis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/integration/embedded"
)

// porcupineTimeout bounds each linearizability check.
const porcupineTimeout = time.Minute

// env is what a run shares: the cluster, its fault injector, a healthy
// client straight to the members, and the healthy watcher.
type env struct {
	cfg     Config
	lg      *zap.Logger
	cluster *embedded.Cluster
	faults  *embedded.Faults
	direct  *clientv3.Client
	w       *watcher
	start   time.Time
	root    string
	log     embedded.FaultLog
	sql     *sqlDB // the SQL workloads' database, nil without them

	stuckMu sync.Mutex
	stuck   *stuckFault // the first fault that did not return, if one
}

// stuckFault is a fault that did not return within Config.StuckAfter.
type stuckFault struct {
	name string // "phase: fault"
	dump string // file with every goroutine's stack, "" if not written
	err  error  // why the dump was not written
}

// teardownBound bounds the teardown of a run after a stuck fault: what
// hangs in the fault may hang there too.
const teardownBound = 30 * time.Second

// Run runs the nemesis suite: each fault phase of cfg with every workload,
// then the checkers, then the seeded-bug scenarios, and returns the
// report. It returns an error only when the suite could not run (a bad
// Config, a cluster that does not start); violations and invalid runs are
// in the report. On a run with violations or invalid, it writes the
// histories to Report.OutDir. It blocks for about cfg.Duration plus the
// checks and the seeded bugs (about a minute); ctx cuts it short.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	lg := cfg.Logger.Named("nemesis")
	lg.Info("nemesis run", zap.Int64("seed", cfg.Seed), zap.String("tier", string(cfg.Tier)),
		zap.Duration("duration", cfg.Duration), zap.Strings("faults", cfg.phases()), zap.Strings("workloads", cfg.workloads()))
	e := &env{cfg: cfg, lg: lg, cluster: cfg.Cluster, start: time.Now(),
		root: fmt.Sprintf("nemesis/%d-%d/", cfg.Seed, time.Now().UnixNano()%1e6)}
	// The run's goroutine hands over the report before it tears down, so
	// that a teardown that hangs where a stuck fault hangs does not hold
	// the report back; otherwise Run waits for the teardown.
	type result struct {
		rep *Report
		err error
	}
	res := make(chan result, 1)
	torn := make(chan struct{})
	go func() {
		defer close(torn)
		if err := e.run(ctx, func(rep *Report) { res <- result{rep, nil} }); err != nil {
			res <- result{nil, err}
		}
	}()
	r := <-res
	if e.stuckFault() == nil {
		<-torn
		return r.rep, r.err
	}
	select {
	case <-torn:
	case <-time.After(teardownBound):
		lg.Error("teardown after a stuck fault did not end; abandoned", zap.Duration("after", teardownBound))
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("teardown after the stuck fault abandoned after %v", teardownBound))
	}
	return r.rep, r.err
}

// run runs the suite and calls deliver with the report before it tears
// down the cluster, clients and watcher. It returns an error, without
// calling deliver, when the suite could not run.
func (e *env) run(ctx context.Context, deliver func(*Report)) (err error) {
	cfg, lg := e.cfg, e.lg
	if e.cluster == nil {
		c, err := embedded.StartCluster(3, embedded.WithoutFsync())
		if err != nil {
			return fmt.Errorf("nemesis: starting cluster: %w", err)
		}
		defer c.Close()
		e.cluster = c
	}
	if e.faults, err = embedded.NewFaults(e.cluster, lg); err != nil {
		return err
	}
	defer e.faults.Close()
	if e.direct, err = e.cluster.NewClient(); err != nil {
		return err
	}
	defer e.direct.Close()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := e.direct.Get(sctx, "\x00", clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return fmt.Errorf("nemesis: reading the start revision: %w", err)
	}
	e.w = startWatcher(e.direct, e.root, resp.Header.Revision+1, e.start)
	defer e.w.stop()
	if slices.ContainsFunc(cfg.workloads(), isSQL) {
		if e.sql, err = openSQL(ctx); err != nil {
			return fmt.Errorf("nemesis: creating the SQL workloads' database: %w", err)
		}
		defer func() {
			if err := e.sql.close(); err != nil {
				lg.Warn("closing the SQL workloads' database", zap.Error(err))
			}
		}()
	}

	rep := &Report{Seed: cfg.Seed, Tier: cfg.Tier, Duration: cfg.Duration, TTL: cfg.TTL, Valid: true}
	phases := cfg.phases()
	phaseDur := cfg.Duration / time.Duration(len(phases))
	if cfg.SeededBugsOnly {
		phases = nil
	}
	for i, ph := range phases {
		if ctx.Err() != nil || e.stuckFault() != nil {
			break
		}
		rows, notes, err := e.runPhase(ctx, ph, phaseDur, mix(uint64(cfg.Seed), uint64(i)))
		if err != nil {
			rep.InvalidReasons = append(rep.InvalidReasons, fmt.Sprintf("phase %s: %v", ph, err))
		}
		rep.Notes = append(rep.Notes, notes...)
		rep.Rows = append(rep.Rows, rows...)
	}
	stuck := e.stuckFault()
	if !cfg.SkipSeededBugs && ctx.Err() == nil && stuck == nil {
		rep.SeededBugs, rep.SeededBugsSkipped = e.runSeededBugs(ctx)
	}
	if err := e.w.err(); err != nil {
		rep.InvalidReasons = append(rep.InvalidReasons, err.Error())
	}
	if stuck != nil {
		rep.StuckFault, rep.StuckDump = stuck.name, stuck.dump
		why := fmt.Sprintf("fault %s did not return within %v (seed %d); the run stopped there; goroutines in %s",
			stuck.name, cfg.StuckAfter, cfg.Seed, stuck.dump)
		if stuck.err != nil {
			why = fmt.Sprintf("fault %s did not return within %v (seed %d); the run stopped there; no goroutine dump: %v",
				stuck.name, cfg.StuckAfter, cfg.Seed, stuck.err)
		}
		rep.InvalidReasons = append(rep.InvalidReasons, why)
	}
	if ctx.Err() != nil {
		rep.Interrupted = true
		rep.InvalidReasons = append(rep.InvalidReasons, "run cut short: "+ctx.Err().Error())
	}
	rep.Faults = e.log.Records()
	rep.total()
	if rep.Violations > 0 || !rep.Valid {
		rep.OutDir, err = e.writeArtifacts(rep)
		if err != nil {
			lg.Warn("could not write the histories", zap.Error(err))
		}
	}
	deliver(rep)
	return nil
}

// stuckFault returns the first fault that did not return in time, or nil.
func (e *env) stuckFault() *stuckFault {
	e.stuckMu.Lock()
	defer e.stuckMu.Unlock()
	return e.stuck
}

// onStuck records the first stuck fault and writes every goroutine's stack
// to a file in the run's output directory.
func (e *env) onStuck(r embedded.FaultRecord) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	sf := &stuckFault{name: r.Name}
	base := e.cfg.OutDir
	if base == "" {
		base = os.TempDir()
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		sf.err = err
	} else if f, err := os.CreateTemp(base, fmt.Sprintf("etcdlock-nemesis-seed%d-stuck-*.txt", e.cfg.Seed)); err != nil {
		sf.err = err
	} else {
		_, werr := fmt.Fprintf(f, "fault %q stuck for %v (seed %d), started %s\n\n%s",
			r.Name, e.cfg.StuckAfter, e.cfg.Seed, r.Start.Format(time.RFC3339Nano), buf)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		sf.dump, sf.err = f.Name(), werr
	}
	e.lg.Error("fault stuck", zap.String("fault", r.Name), zap.Int64("seed", e.cfg.Seed), zap.String("goroutines", sf.dump))
	e.stuckMu.Lock()
	if e.stuck == nil {
		e.stuck = sf
	}
	e.stuckMu.Unlock()
}

// mix derives a seed for part i of a run from the run's seed (splitmix64).
func mix(seed, i uint64) uint64 {
	z := seed + (i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *Report) total() {
	r.Valid = len(r.InvalidReasons) == 0
	for _, row := range r.Rows {
		r.CriticalSections += row.CriticalSections
		r.StaleRejected += row.StaleRejected
		r.LeaseExpiries += row.LeaseExpiries
		r.ControlLostUpdates += row.ControlLostUpdates
		for _, n := range row.Violations {
			r.Violations += n
		}
		for _, f := range row.findings {
			if len(r.Findings) < 50 {
				r.Findings = append(r.Findings, f)
			}
		}
		if !row.Valid {
			r.Valid = false
		}
	}
	for _, b := range r.SeededBugs {
		r.SeededBugsTotal++
		if b.Caught {
			r.SeededBugsCaught++
		}
		if !b.CleanWithoutBug {
			r.Violations++
			if len(r.Findings) < 50 {
				r.Findings = append(r.Findings, Finding{"seeded-bug", b.Bug + ": the scenario failed a checker without the bug"})
			}
		}
	}
}

// warmedUp reports whether every workload has completed MinWarmupSections
// critical sections.
func warmedUp(wls []*workload) bool {
	for _, wl := range wls {
		if wl.cs.Load() < MinWarmupSections {
			return false
		}
	}
	return true
}

// runPhase runs every workload under one fault phase and checks them.
func (e *env) runPhase(ctx context.Context, phase string, dur time.Duration, seed uint64) ([]Row, []string, error) {
	lg := e.lg.With(zap.String("phase", phase))
	lg.Info("phase start", zap.Duration("duration", dur), zap.Uint64("seed", seed))
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wls []*workload
	var startErr error
	for i, name := range e.cfg.workloads() {
		ns := e.root + phase + "/" + name + "/"
		data := ""
		if name == WorkloadMutexEtcd || name == WorkloadSemaphore || name == WorkloadElection {
			data = e.root + "data/" + phase + "/" + name
		}
		wl := e.newWorkload(name, ns, data)
		wls = append(wls, wl)
		if err := wl.start(wctx, mix(seed, uint64(100+i))); err != nil {
			startErr = fmt.Errorf("starting workload %s: %w", name, err)
			break
		}
	}
	var phaseFaults []embedded.FaultRecord
	warm := make([]int64, len(wls))
	if startErr == nil {
		start := time.Now()
		sleepCtx(ctx, e.cfg.Warmup)
		// A loaded machine can slow a phase's start (new clients, a cluster
		// still settling after the last phase): wait until every workload
		// has shown it makes progress, rather than fault a workload that
		// has not started and call the run invalid. The faults get what is
		// left of the phase, at least half of what the warm-up left.
		extra := (dur - e.cfg.Warmup) / 2
		for deadline := start.Add(e.cfg.Warmup + extra); !warmedUp(wls) && time.Now().Before(deadline) && ctx.Err() == nil; {
			sleepCtx(ctx, 20*time.Millisecond)
		}
		for i, wl := range wls {
			warm[i] = wl.cs.Load()
		}
		phaseFaults = e.runFaults(ctx, phase, dur-time.Since(start), seed, wls)
	}
	stopWorkers()
	// Close errors (a revoke through a connection a fault broke, say) are
	// noted, not fatal: whatever they leave behind, the clean-up check sees.
	var notes []string
	for _, wl := range wls {
		if n := wl.malformed.Load(); n > 0 {
			notes = append(notes, fmt.Sprintf("%s/%s: %d transaction responses without their operation's response, recorded as of unknown outcome", phase, wl.name, n))
		}
		if err := wl.stop(); err != nil {
			notes = append(notes, fmt.Sprintf("%s/%s: closing: %v", phase, wl.name, err))
		}
	}
	stopped := time.Now()
	rows := make([]Row, len(wls))
	for i, wl := range wls {
		if e.stuckFault() != nil {
			// The run is invalid and the cluster may be stuck: report at
			// once rather than wait on checks that read from it.
			rows[i] = Row{Workload: wl.name, Fault: phase, CriticalSections: int(wl.cs.Load()),
				Invalid: []string{"not checked: a fault was stuck"}}
			continue
		}
		rows[i] = e.checkWorkload(wl, phase, int(warm[i]), phaseFaults)
	}
	lg.Info("phase end", zap.Int("faults", len(phaseFaults)), zap.Duration("checks", time.Since(stopped)))
	return rows, notes, startErr
}

// runFaults runs the phase's schedules for d and returns what they did.
func (e *env) runFaults(ctx context.Context, phase string, d time.Duration, seed uint64, wls []*workload) []embedded.FaultRecord {
	fctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	ttl := e.cfg.TTL
	f := e.faults
	var log embedded.FaultLog
	var lanes []*embedded.Schedule
	member := func(faults ...embedded.Fault) {
		lanes = append(lanes, &embedded.Schedule{Faults: faults, MinGap: 300 * time.Millisecond, MaxGap: time.Second})
	}
	client := func(fault func(*workload) embedded.Fault, more ...func(*workload) embedded.Fault) {
		for _, wl := range wls {
			fs := []embedded.Fault{fault(wl)}
			for _, m := range more {
				fs = append(fs, m(wl))
			}
			lanes = append(lanes, &embedded.Schedule{Faults: fs, MinGap: 200 * time.Millisecond, MaxGap: time.Second})
		}
	}
	pause := func(wl *workload) embedded.Fault { return wl.pauseHolderFault(ttl) }
	blackhole := func(wl *workload) embedded.Fault { return wl.blackholeFault(ttl) }
	restart := f.RestartMemberFault(200*time.Millisecond, 1500*time.Millisecond)
	partition := f.PartitionLeaderFault(500*time.Millisecond, 2*time.Second)
	move := f.MoveLeaderFault()
	pauseMember := f.PauseMemberFault(300*time.Millisecond, 1500*time.Millisecond)
	compact := false
	switch phase {
	case FaultClientPause:
		client(pause)
	case FaultBlackholeClient:
		client(blackhole)
	case FaultRestartMember:
		member(restart)
	case FaultPartitionLeader:
		member(partition)
	case FaultMoveLeader:
		lanes = append(lanes, &embedded.Schedule{Faults: []embedded.Fault{move}, MinGap: 100 * time.Millisecond, MaxGap: 600 * time.Millisecond})
	case FaultPauseMember:
		member(pauseMember)
	case FaultCompaction:
		compact = true
	case FaultMixed:
		member(restart, partition, move, pauseMember)
		client(pause, blackhole)
		compact = true
	}
	if e.cfg.extraFault != nil {
		member(*e.cfg.extraFault)
	}
	// A stuck fault ends the phase: the other lanes are told to stop, and
	// waited for 10 s at most (they may hang where the stuck one does).
	stuck := make(chan struct{})
	var stuckOnce sync.Once
	var wg sync.WaitGroup
	for i, s := range lanes {
		s.Seed = mix(seed, uint64(i))
		s.Log = &log
		s.Logger = e.lg.With(zap.String("phase", phase))
		s.StuckAfter = e.cfg.StuckAfter
		s.OnStuck = func(r embedded.FaultRecord) {
			r.Name = phase + ": " + r.Name
			e.onStuck(r)
			stuckOnce.Do(func() { close(stuck) })
			cancel()
		}
		wg.Go(func() { s.Run(fctx) })
	}
	if compact {
		wg.Go(func() {
			start := time.Now()
			n, err := f.Compactor(fctx, CompactionPeriod, e.w.Consumed)
			r := embedded.FaultRecord{Name: "compactor", Target: fmt.Sprintf("%d compactions every %v", n, CompactionPeriod),
				Start: start, End: time.Now()}
			if err != nil {
				r.Err = err.Error()
			}
			if n > 0 {
				log.Add(r)
			}
		})
	}
	// The waiter ends with the lanes: at once normally; after a stuck fault
	// it is left behind with them (nothing can end a call hung in etcd),
	// and the run reports and ends (see Run).
	lanesDone := make(chan struct{})
	go func() { wg.Wait(); close(lanesDone) }()
	select {
	case <-lanesDone:
	case <-stuck:
		select {
		case <-lanesDone:
		case <-time.After(min(e.cfg.StuckAfter, 10*time.Second)):
			e.lg.Error("fault lanes still running after a stuck fault; abandoned", zap.String("phase", phase))
		}
	}
	recs := log.Records()
	for i := range recs {
		recs[i].Name = phase + ": " + recs[i].Name
		e.log.Add(recs[i])
	}
	return recs
}

// checkWorkload runs the checkers over one workload of one phase.
func (e *env) checkWorkload(wl *workload, phase string, warm int, faults []embedded.FaultRecord) Row {
	row := Row{Workload: wl.name, Fault: phase, WarmupSections: warm, Violations: map[string]int{},
		CriticalSections: int(wl.cs.Load()), Porcupine: LinNone, strict: wl.strict}
	for _, c := range checkers {
		row.Violations[c] = 0
	}
	add := func(fs ...Finding) {
		for _, f := range fs {
			row.Violations[f.Checker]++
			row.findings = append(row.findings, Finding{f.Checker, phase + "/" + wl.name + ": " + f.What})
		}
	}
	invalid := func(s string) { row.Invalid = append(row.Invalid, s) }
	if wl.fenced {
		row.StaleRejected = int(wl.stale.Load())
	}
	for _, f := range faults {
		if f.Err == "" && (!strings.Contains(f.Name, "holder") && !strings.Contains(f.Name, "client") ||
			strings.HasPrefix(f.Target, wl.name+"/")) {
			row.FaultsInjected++
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The register's final value, then remove its key.
	var final int64
	if wl.reg != nil {
		final = wl.reg.value
	} else if wl.sql != nil {
		var err error
		if final, err = wl.sql.final(ctx); err != nil {
			invalid("reading the final value: " + err.Error())
		}
	} else if wl.data != "" {
		resp, err := e.direct.Get(ctx, wl.data)
		if err != nil {
			invalid("reading the final value: " + err.Error())
		} else if len(resp.Kvs) == 1 {
			fmt.Sscan(string(resp.Kvs[0].Value), &final)
		}
		if _, err := e.direct.Delete(ctx, wl.data); err != nil {
			invalid("removing the register: " + err.Error())
		}
	}
	// No key may be left: leases of closed primitives are revoked, and any
	// other key's lease expires within a TTL. Lock-delay's holding records
	// are the exception: a record whose key ended with no release is how
	// the next acquirer learns of that loss, so it stays until one comes
	// (which then waits the delay and clears it); none comes after the
	// phase, so the records are removed here once every other key is gone.
	held := ""
	if wl.name == WorkloadLockDelay {
		held = wl.ns + "lockdelay-held/"
	}
	if left := e.waitEmpty(ctx, wl.ns, held, 3*e.cfg.TTL+3*time.Second); left != "" {
		add(Finding{CheckCleanup, "keys left: " + left})
	} else if held != "" {
		if _, err := e.direct.Delete(ctx, held, clientv3.WithPrefix()); err != nil {
			invalid("removing lock-delay's holding records: " + err.Error())
		}
	}
	if err := e.w.catchUp(ctx); err != nil {
		invalid("watcher: " + err.Error())
	}
	grants, accesses, observed := wl.hist.snapshot()
	row.grants, row.accesses, row.observed = grants, accesses, observed
	row.HolderPauses = wl.hist.pauses
	if phase == FaultClientPause {
		// Only where holder pauses are the only fault: elsewhere a leader
		// change can postpone every lease's expiry (a new leader renews
		// them all), so a long pause need not let one expire.
		row.longPauses = wl.hist.long
	}
	events := e.w.Events()
	lives := replay(events, wl.spec)
	gr := checkGrants(wl.spec, lives, grants, leaseUse(events))
	row.LeaseExpiries = gr.expiries
	add(gr.findings...)
	if wl.name == WorkloadElection {
		add(checkObserve(lives, observed)...)
	}
	if wl.name == WorkloadLockDelay {
		add(checkLockDelay(wl.ns, lives, events, grants, lockDelayOf(e.cfg))...)
	}
	if wl.counter {
		cr := checkCounter(accesses, final)
		if wl.control {
			row.ControlLostUpdates = cr.lost
		} else {
			add(cr.findings...)
		}
	}
	if wl.name != WorkloadSemaphore {
		res, err := checkLinearizable(accesses, wl.strict, porcupineTimeout, "")
		if err != nil {
			invalid("porcupine: " + err.Error())
		}
		row.Porcupine = res
		switch {
		case res == LinTimeout:
			invalid("porcupine timed out")
		case wl.control && res == LinIllegal:
			row.Porcupine = LinExpected
		case res == LinIllegal:
			add(Finding{CheckLinearizable, fmt.Sprintf("the register's history of %d accesses is not linearizable", len(accesses))})
		}
	}

	row.Invalid = append(row.Invalid, row.exercised()...)
	row.Valid = len(row.Invalid) == 0
	return row
}

// exercised returns why row's workload was not exercised enough for its
// checks to vouch for anything, nil if it was.
func (row *Row) exercised() []string {
	var out []string
	if row.WarmupSections < MinWarmupSections {
		out = append(out, fmt.Sprintf("%d critical sections before the first fault", row.WarmupSections))
	}
	if row.FaultsInjected == 0 {
		out = append(out, "no fault ran")
	} else if row.CriticalSections <= row.WarmupSections {
		// A workload that stopped (or never got) going once the faults
		// began has nothing under the faults for the checkers to check.
		out = append(out, "no critical section completed under the faults")
	}
	if row.longPauses > 0 && row.LeaseExpiries == 0 {
		out = append(out, fmt.Sprintf("%d holder pauses of 2 TTL or more let no lease expire", row.longPauses))
	}
	return out
}

// waitEmpty waits up to d for no key to be left under prefix, but for
// keys under except (if not ""), and returns the keys left otherwise (""
// when none).
func (e *env) waitEmpty(ctx context.Context, prefix, except string, d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := e.direct.Get(rctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(10))
		if err == nil && except != "" && resp.Count > 0 {
			// Count what is left outside except: etcd cannot range around it.
			var n *clientv3.GetResponse
			n, err = e.direct.Get(rctx, except, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err == nil {
				resp.Count -= n.Count
				resp.Kvs = slices.DeleteFunc(resp.Kvs, func(kv *mvccpb.KeyValue) bool { return strings.HasPrefix(string(kv.Key), except) })
			}
		}
		cancel()
		if err == nil && resp.Count == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			if err != nil {
				return "cannot read: " + err.Error()
			}
			keys := make([]string, len(resp.Kvs))
			for i, kv := range resp.Kvs {
				keys[i] = string(kv.Key)
			}
			return fmt.Sprintf("%d: %s", resp.Count, strings.Join(keys, " "))
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// writeArtifacts writes the report, the fault log, the watcher's events,
// each row's history and findings, and porcupine's visualization of each
// non-linearizable history to a new directory named after the seed.
func (e *env) writeArtifacts(rep *Report) (string, error) {
	base := e.cfg.OutDir
	if base == "" {
		base = os.TempDir()
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(base, fmt.Sprintf("etcdlock-nemesis-seed%d-", rep.Seed))
	if err != nil {
		return "", err
	}
	write := func(name string, v any) error {
		b, err := json.MarshalIndent(v, "", " ")
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	errs := []error{write("report.json", rep), write("events.json", e.w.Events())}
	for _, row := range rep.Rows {
		name := row.Fault + "-" + row.Workload
		errs = append(errs, write(name+".json", map[string]any{
			"row": row, "findings": row.findings, "grants": row.grants, "accesses": row.accesses, "observed": row.observed,
		}))
		if row.Porcupine == LinIllegal || row.Porcupine == LinExpected {
			_, err := checkLinearizable(row.accesses, row.strict, porcupineTimeout, filepath.Join(dir, name+".html"))
			errs = append(errs, err)
		}
	}
	errs = append(errs, os.WriteFile(filepath.Join(dir, "REPLAY"),
		[]byte(fmt.Sprintf("seed %d tier %s duration %v ttl %v\n", rep.Seed, rep.Tier, rep.Duration, rep.TTL)), 0o644))
	return dir, errors.Join(errs...)
}
