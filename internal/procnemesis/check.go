package procnemesis

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/nemesis"
	"github.com/etcdlock/etcdlock/internal/procnemesis/record"
)

// exitLost is etcdlock run's exit status when the hold was lost while its
// command ran and the command was stopped.
const exitLost = 121

// porcupineTimeout bounds porcupine on one register.
const porcupineTimeout = 2 * time.Minute

// CheckFrozen is the checker of frozen holders' late writes, and
// CheckRunChildren that of a killed etcdlock run's children, in
// Report.Findings and Row.Violations beside internal/nemesis's checkers.
const (
	CheckFrozen      = "frozen"
	CheckRunChildren = "run-children"
)

// run runs the holders and the nemeses, stops them and checks.
func (s *suite) run(ctx context.Context) (*Report, error) {
	rep := &Report{Seed: s.cfg.Seed, Bug: s.cfg.Bug, Duration: s.cfg.Duration, TTL: s.cfg.TTL, Fsync: true, Members: len(s.c.members),
		FaultCounts: make(map[string]int)}
	hs, err := s.startHolders()
	if err != nil {
		return nil, err
	}
	s.logf("cluster and %d workers up; warming up for %v", len(hs.live), s.cfg.Warmup)
	sleepCtx(ctx, s.cfg.Warmup)
	warm := s.w.Consumed()
	fctx, cancel := context.WithTimeout(ctx, s.cfg.Duration)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.memberNemesis(fctx, rand.New(rand.NewPCG(uint64(s.cfg.Seed), 1)))
	}()
	go func() {
		defer wg.Done()
		s.holderNemesis(fctx, rand.New(rand.NewPCG(uint64(s.cfg.Seed), 2)), hs)
	}()
	wg.Wait()
	cancel()
	rep.Interrupted = ctx.Err() != nil
	s.logf("faults over; healing and stopping the holders")

	// Heal, stop the holders, let the dead holders' leases expire.
	hctx, hcancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer hcancel()
	if err := s.c.heal(hctx); err != nil {
		s.note("healing the cluster: %v", err)
	}
	hs.close()
	left := s.waitEmpty(hctx)
	if err := s.w.CatchUp(hctx); err != nil {
		rep.InvalidReasons = append(rep.InvalidReasons, "watcher: "+err.Error())
	}
	rep.ClockDrift = time.Duration(s.now()) - time.Since(s.start)
	s.logf("checking the histories")
	s.check(hctx, rep, warm)
	if left != "" {
		rep.Findings = append(rep.Findings, nemesis.Finding{Checker: nemesis.CheckCleanup, What: left})
		rep.Violations++
	}
	return rep, nil
}

// waitEmpty waits until no key is left under the namespace (the leases
// of killed holders expire within their TTL), for at most 3 TTL and 10 s,
// and describes what is left if something is.
func (s *suite) waitEmpty(ctx context.Context) string {
	end := time.Now().Add(3*s.cfg.TTL + 10*time.Second)
	for {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := s.c.cli.Get(gctx, namespace, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		cancel()
		if err == nil && resp.Count == 0 {
			return ""
		}
		if time.Now().After(end) || ctx.Err() != nil {
			if err != nil {
				return "cannot tell whether keys are left: " + err.Error()
			}
			return fmt.Sprintf("%d keys left under %q, first %q", resp.Count, namespace, resp.Kvs[0].Key)
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

// loaded is one holder's history, as internal/nemesis's records.
type loaded struct {
	grants []*nemesis.Grant
	acc    map[string][]nemesis.Access // by register
}

// load reads h's history; client numbers porcupine's clients.
func (s *suite) load(h *holder, client *int) (loaded, int) {
	out := loaded{acc: make(map[string][]nemesis.Access)}
	lines, torn, err := record.Read(h.hist)
	if err != nil {
		return out, 0 // a run whose job never started has no history
	}
	type key struct {
		k string
		t int64
	}
	grants := make(map[key]*nemesis.Grant)
	calls := make(map[int64]record.Line)
	clients := make(map[string]int)
	clientOf := func(reg string) int {
		c, ok := clients[reg]
		if !ok {
			*client++
			c = *client
			clients[reg] = c
		}
		return c
	}
	add := func(c record.Line, st nemesis.Outcome, v int64, ret int64) {
		a := nemesis.Access{Client: clientOf(c.Reg), Worker: h.name, Write: c.Write, Writer: true, Token: c.Token,
			Value: v, Status: st, Call: c.At, Ret: ret}
		if st == nemesis.Unknown {
			a.Ret = math.MaxInt64
			delete(clients, c.Reg) // go on as a new porcupine client
		}
		out.acc[c.Reg] = append(out.acc[c.Reg], a)
	}
	// Grants first: a hold's Done may close before its grant is written.
	for _, l := range lines {
		if l.Kind == record.Grant {
			g := &nemesis.Grant{Worker: h.name, Key: l.Key, Token: l.Token, Lease: l.Lease, Weight: 1, Writer: true,
				Invoke: l.Invoke, Return: l.Return, RPost: l.RPost}
			grants[key{l.Key, l.Token}] = g
			out.grants = append(out.grants, g)
		}
	}
	for _, l := range lines {
		switch l.Kind {
		case record.Unlock:
			if g := grants[key{l.Key, l.Token}]; g != nil && g.UnlockAt == 0 {
				g.UnlockAt = l.At
			}
		case record.Done:
			if g := grants[key{l.Key, l.Token}]; g != nil && g.DoneAt == 0 {
				g.DoneAt, g.DoneCause, g.LeaseAcked = l.At, l.Cause, l.Acked
			}
		case record.Call:
			calls[l.ID] = l
		case record.Ret:
			c, ok := calls[l.ID]
			if !ok {
				continue
			}
			delete(calls, l.ID)
			v := c.Value
			if !c.Write {
				v = l.Value
			}
			switch l.Status {
			case "ok":
				add(c, nemesis.OK, v, l.At)
			case "rejected":
				add(c, nemesis.Rejected, v, l.At)
			case "unknown":
				add(c, nemesis.Unknown, v, l.At)
			} // aborted: no effect, not recorded
		}
	}
	for _, c := range calls { // cut short by a SIGKILL: may have taken effect
		add(c, nemesis.Unknown, c.Value, 0)
	}

	// A frozen holder is deemed told of its loss when it froze: it acts on
	// nothing until it resumes, and what it does then the fences must
	// refuse (checked below). A holder that died is deemed to have let go
	// when it was seen dead.
	for _, f := range h.freezes {
		if g := grants[key{f.Key, f.Token}]; g != nil && (g.DoneAt == 0 || g.DoneAt >= f.From) &&
			(g.UnlockAt == 0 || g.UnlockAt >= f.From) {
			g.DoneAt = f.From
			if g.DoneCause == "" {
				g.DoneCause = "frozen"
			}
		}
	}
	if h.run && h.proc != nil && h.proc.exited() && h.proc.cmd.ProcessState.ExitCode() == exitLost {
		// etcdlock run lost the hold and sent its job SIGTERM, then
		// SIGKILL a grace later if the job had not exited: a job that
		// died of it before it could record the SIGTERM was told when run
		// sent it, at the latest run's exit less the grace.
		told := h.proc.exitNs - s.startNs
		if b, err := os.ReadFile(h.logPath()); err == nil && strings.Contains(string(b), "SIGKILL") {
			told -= int64(s.runGrace())
		}
		for _, g := range out.grants {
			if g.UnlockAt == 0 && g.DoneAt == 0 {
				g.DoneAt, g.DoneCause = told, "lost (etcdlock run exited 121)"
			}
		}
	}
	if h.proc != nil && h.proc.exited() {
		died := max(h.proc.exitNs-s.startNs, h.killedAt)
		for _, g := range out.grants {
			if g.UnlockAt == 0 && g.DoneAt == 0 {
				g.UnlockAt = died
			}
		}
	}
	return out, torn
}

// check runs the checkers over every lock's histories and fills rep.
func (s *suite) check(ctx context.Context, rep *Report, warm int64) {
	events := s.w.Events()
	if err := s.w.Err(); err != nil {
		rep.InvalidReasons = append(rep.InvalidReasons, err.Error())
	}
	s.hmu.Lock()
	holders := append([]*holder(nil), s.holders...)
	rep.Faults = append([]FaultRecord(nil), s.faults...)
	rep.Outlived = append([]string(nil), s.outlive...)
	rep.Notes = append(rep.Notes, s.notes...)
	s.hmu.Unlock()
	rep.HolderProcesses = len(holders)

	addFinding := func(row *Row, f nemesis.Finding) {
		row.Violations[f.Checker]++
		rep.Violations++
		if len(rep.Findings) < 50 {
			rep.Findings = append(rep.Findings, nemesis.Finding{Checker: f.Checker, What: row.Lock + ": " + f.What})
		}
	}
	client := 0
	locks := append(append([]shard(nil), s.shards...), s.runLk)
	for i := range locks {
		sh := &locks[i]
		row := Row{Lock: sh.name, Violations: make(map[string]int)}
		var grants []*nemesis.Grant
		acc := make(map[string][]nemesis.Access)
		for _, h := range holders {
			if h.shard.name != sh.name {
				continue
			}
			row.Holders++
			l, torn := s.load(h, &client)
			rep.TornLines += torn
			grants = append(grants, l.grants...)
			for reg, a := range l.acc {
				acc[reg] = append(acc[reg], a...)
			}
			s.checkFrozen(rep, &row, h, l, addFinding)
		}
		row.Grants = len(grants)
		findings, exp, early := nemesis.CheckLock(nemesis.LockHistory{Prefix: sh.prefix, RW: sh.rw, Events: events, Grants: grants})
		row.LeaseExpiries = exp
		for _, e := range early {
			rep.EarlyRevocations = append(rep.EarlyRevocations, sh.name+": "+e)
		}
		for _, f := range findings {
			addFinding(&row, f)
		}
		finalE, finalC, finalS, err := s.finals(ctx, sh)
		if err != nil {
			rep.InvalidReasons = append(rep.InvalidReasons, fmt.Sprintf("%s: reading the final counters: %v", sh.name, err))
		}
		for _, reg := range []string{record.RegEtcd, record.RegSQL} {
			final := finalE
			if reg == record.RegSQL {
				final = finalS
			}
			v := nemesis.CheckRegister(acc[reg], final, reg == record.RegSQL, porcupineTimeout)
			for _, f := range v.Findings {
				addFinding(&row, f)
			}
			if v.Porcupine == nemesis.LinTimeout {
				rep.InvalidReasons = append(rep.InvalidReasons, fmt.Sprintf("%s: porcupine timed out on the %s register", sh.name, reg))
			}
			for _, a := range acc[reg] {
				switch {
				case a.Status == nemesis.Rejected:
					row.StaleRejected++
				case a.Write && a.Status == nemesis.OK && reg == record.RegEtcd:
					row.CriticalSections++
				case a.Write && a.Status == nemesis.OK:
					row.SQLCriticalSections++
				}
			}
			if reg == record.RegEtcd {
				row.PorcupineEtcd = v.Porcupine
			} else {
				row.PorcupineSQL = v.Porcupine
			}
		}
		// The control: only its lost updates matter (they are expected).
		row.ControlLostUpdates = nemesis.CheckRegister(acc[record.RegCtl], finalC, true, time.Millisecond).Lost
		rep.CriticalSections += row.CriticalSections
		rep.SQLCriticalSections += row.SQLCriticalSections
		rep.StaleRejected += row.StaleRejected
		rep.LeaseExpiries += row.LeaseExpiries
		rep.ControlLostUpdates += row.ControlLostUpdates
		rep.Rows = append(rep.Rows, row)
	}
	for _, h := range holders {
		rep.Freezes = append(rep.Freezes, h.freezes...)
	}
	for _, f := range rep.Faults {
		rep.FaultCounts[f.Kind]++
		if f.Leader {
			rep.LeaderFaults++
		}
		if f.Kind == FaultKillRun {
			rep.RunsKilled++
		}
	}
	rep.RunChildrenOutlived = len(rep.Outlived)
	rep.Violations += len(rep.Outlived)
	for _, o := range rep.Outlived {
		if len(rep.Findings) < 50 {
			rep.Findings = append(rep.Findings, nemesis.Finding{Checker: CheckRunChildren, What: o})
		}
	}

	// Validity.
	if warm <= 0 || rep.CriticalSections == 0 {
		rep.InvalidReasons = append(rep.InvalidReasons, "no critical section completed")
	}
	if !rep.Interrupted {
		for _, k := range AllFaults {
			if rep.FaultCounts[k] == 0 {
				rep.InvalidReasons = append(rep.InvalidReasons, "no "+k+" fault ran")
			}
		}
	}
	rep.Valid = len(rep.InvalidReasons) == 0 && !rep.Interrupted
}

// checkFrozen checks that every write holder h made to a fenced counter
// after it resumed from a freeze, under the frozen hold, was refused.
func (s *suite) checkFrozen(rep *Report, row *Row, h *holder, l loaded, addFinding func(*Row, nemesis.Finding)) {
	for _, f := range h.freezes {
		rep.FrozenHolders++
		if !f.NewerAdmitted {
			continue // its hold may still have been current: its writes may be accepted
		}
		if time.Duration(f.To-f.From) >= s.cfg.TTL {
			rep.FrozenPastTTL++
		}
		writes, refused := 0, 0
		for _, reg := range []string{record.RegEtcd, record.RegSQL} {
			last := nemesis.Outcome("")
			for _, a := range l.acc[reg] {
				if !a.Write || a.Token != f.Token || a.Call < f.From {
					continue
				}
				last = a.Status
				switch a.Status {
				case nemesis.Rejected:
					rep.FrozenLateRefused++
				case nemesis.OK:
					rep.FrozenLateAccepted++
					addFinding(row, nemesis.Finding{Checker: CheckFrozen, What: fmt.Sprintf(
						"%s, frozen from %.3fs to %.3fs with token %d, wrote %d to the %s counter after it resumed, and it was accepted",
						h.name, float64(f.From)/1e9, float64(f.To)/1e9, f.Token, a.Value, reg)})
				default:
					rep.FrozenLateUnknown++
				}
			}
			if last != "" {
				writes++
			}
			if last == nemesis.Rejected {
				refused++
			}
		}
		if writes > 0 && refused == writes {
			rep.FrozenAllRefused++
		}
	}
}

// finals reads sh's three counters.
func (s *suite) finals(ctx context.Context, sh *shard) (etcd, ctl, sqlv int64, err error) {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	num := func(key string) (int64, error) {
		resp, err := s.c.cli.Get(gctx, key)
		if err != nil || len(resp.Kvs) == 0 {
			return 0, err
		}
		return strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
	}
	if etcd, err = num(sh.reg); err != nil {
		return
	}
	if ctl, err = num(sh.ctl); err != nil {
		return
	}
	err = s.db.QueryRowContext(gctx, "SELECT n FROM counter WHERE name = ?", sh.name).Scan(&sqlv)
	return
}
