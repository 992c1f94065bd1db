package procnemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"github.com/etcdlock/etcdlock/internal/procnemesis/record"
)

// Fault kinds, FaultRecord.Kind.
const (
	FaultKillMember    = "kill-member"    // SIGKILL, then restart on its data dir
	FaultStopMember    = "stop-member"    // SIGSTOP, then SIGCONT
	FaultIsolateMember = "isolate-member" // both its links cut, then mended
	FaultCutLink       = "cut-link"       // one link between members cut, then mended
	FaultCompact       = "compact"        // compaction below what the watcher read
	FaultFreezeHolder  = "freeze-holder"  // SIGSTOP a worker in its critical section past its TTL
	FaultKillHolder    = "kill-holder"    // SIGKILL a worker (a new one takes its place)
	FaultKillRun       = "kill-run"       // SIGKILL `etcdlock run` while its job runs
	FaultSlowHolder    = "slow-holder"    // a worker's answers delayed, then its requests dropped
)

// AllFaults lists every fault kind.
var AllFaults = []string{FaultKillMember, FaultStopMember, FaultIsolateMember, FaultCutLink, FaultCompact,
	FaultFreezeHolder, FaultKillHolder, FaultKillRun, FaultSlowHolder}

// FaultRecord is one fault injected.
type FaultRecord struct {
	Kind   string `json:"kind"`
	Target string `json:"target"`
	Leader bool   `json:"leader,omitempty"` // the target member led when hit
	Start  int64  `json:"start"`            // ns since the run's start
	End    int64  `json:"end"`
	Err    string `json:"err,omitempty"`
}

func (s *suite) record(f FaultRecord) {
	f.End = s.now()
	s.hmu.Lock()
	s.faults = append(s.faults, f)
	s.hmu.Unlock()
	msg := ""
	if f.Err != "" {
		msg = ": " + f.Err
	}
	lead := ""
	if f.Leader {
		lead = " (leader)"
	}
	s.logf("%s %s%s, %.1fs%s", f.Kind, f.Target, lead, float64(f.End-f.Start)/1e9, msg)
}

// between draws a duration uniformly from [lo, hi].
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// memberNemesis injects member faults one at a time until ctx ends, and
// leaves every member running and every link mended.
func (s *suite) memberNemesis(ctx context.Context, rng *rand.Rand) {
	kinds := []string{FaultKillMember, FaultStopMember, FaultIsolateMember, FaultCutLink, FaultCompact}
	for i := 0; ctx.Err() == nil; i++ {
		sleepCtx(ctx, between(rng, 500*time.Millisecond, 1500*time.Millisecond))
		if ctx.Err() != nil {
			return
		}
		kind := kinds[i%len(kinds)] // every kind in turn, targets at random
		target := rng.IntN(len(s.c.members))
		lead := s.c.leader(ctx)
		if rng.IntN(2) == 0 && lead >= 0 {
			target = lead
		}
		s.quiet.Lock() // no slow holder is being cut meanwhile
		f := FaultRecord{Kind: kind, Target: s.c.members[target].name, Leader: target == lead, Start: s.now()}
		hold := between(rng, time.Second, 4*time.Second)
		switch kind {
		case FaultKillMember:
			s.c.kill(target)
			sleepCtx(ctx, hold)
			if err := s.c.restart(context.WithoutCancel(ctx), target); err != nil {
				f.Err = err.Error()
			}
		case FaultStopMember:
			s.c.freeze(target)
			sleepCtx(ctx, hold)
			s.c.thaw(target)
		case FaultIsolateMember:
			var links [][2]int
			for j := range s.c.members {
				if j != target {
					links = append(links, [2]int{target, j})
				}
			}
			s.c.partition(links)
			sleepCtx(ctx, hold)
			s.c.partition(nil)
		case FaultCutLink:
			other := (target + 1 + rng.IntN(len(s.c.members)-1)) % len(s.c.members)
			f.Target += "-" + s.c.members[other].name
			s.c.partition([][2]int{{target, other}})
			sleepCtx(ctx, hold)
			s.c.partition(nil)
		case FaultCompact:
			f.Target, f.Leader = "", false
			rev := s.w.Consumed() - 10
			if rev <= 1 {
				s.quiet.Unlock()
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := s.c.cli.Compact(cctx, rev); err != nil {
				f.Err = err.Error()
			}
			cancel()
			f.Target = fmt.Sprintf("revision %d", rev)
		}
		s.quiet.Unlock()
		s.record(f)
	}
}

// maxFrozen bounds the freezes in progress at once, each of a different
// lock's worker.
const maxFrozen = 3

// holderNemesis freezes and kills holders until ctx ends: freezes run in
// the background, up to maxFrozen at once, on locks that have no freeze in
// progress (so that the frozen holder's lock passes on to another), and
// kills hit workers of the other locks. It waits for its freezes.
func (s *suite) holderNemesis(ctx context.Context, rng *rand.Rand, hs *holderSet) {
	var (
		mu   sync.Mutex
		busy = make(map[string]bool) // locks with a freeze in progress
		wg   sync.WaitGroup
	)
	defer wg.Wait()
	free := func(h *holder) bool {
		mu.Lock()
		defer mu.Unlock()
		return !busy[h.shard.name]
	}
	kinds := []string{FaultSlowHolder, FaultFreezeHolder, FaultKillHolder, FaultFreezeHolder, FaultKillRun, FaultFreezeHolder}
	if len(s.cfg.holderFaults) > 0 {
		kinds = s.cfg.holderFaults
	}
	for i := 0; ctx.Err() == nil; i++ {
		sleepCtx(ctx, between(rng, 300*time.Millisecond, 900*time.Millisecond))
		if ctx.Err() != nil {
			return
		}
		switch kinds[i%len(kinds)] {
		case FaultFreezeHolder:
			mu.Lock()
			n := len(busy)
			mu.Unlock()
			h := hs.pick(rng, free)
			if h == nil || n >= maxFrozen {
				continue
			}
			mu.Lock()
			busy[h.shard.name] = true
			mu.Unlock()
			d := between(rng, 2*s.cfg.TTL, 3*s.cfg.TTL)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(busy, h.shard.name)
					mu.Unlock()
				}()
				f := FaultRecord{Kind: FaultFreezeHolder, Target: h.name, Start: s.now()}
				fr, ok := s.freeze(ctx, h, d, 15*time.Second)
				if !ok {
					return // it never reached its critical section: no fault
				}
				if !fr.NewerAdmitted {
					f.Err = "no newer holder admitted by the SQL fence before it was resumed"
				}
				f.Target = fmt.Sprintf("%s (token %d)", h.name, fr.Token)
				s.record(f)
			}()
		case FaultSlowHolder:
			mu.Lock()
			n := len(busy)
			mu.Unlock()
			// A worker that holds its lock now, if there is one: it will
			// likely hold again while its answers are slow.
			h := hs.pick(rng, func(h *holder) bool { return free(h) && holding(h) })
			if h == nil {
				h = hs.pick(rng, free)
			}
			if h == nil || n >= maxFrozen {
				continue
			}
			mu.Lock()
			busy[h.shard.name] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(busy, h.shard.name)
					mu.Unlock()
				}()
				f := FaultRecord{Kind: FaultSlowHolder, Target: h.name, Start: s.now()}
				f.Target += " (" + s.slow(ctx, h) + ")"
				s.record(f)
			}()
		case FaultKillHolder:
			h := hs.pick(rng, free)
			if h == nil {
				continue
			}
			f := FaultRecord{Kind: FaultKillHolder, Target: h.name, Start: s.now()}
			h.proc.killGroup()
			<-h.proc.done
			s.hmu.Lock()
			h.killedAt = s.now()
			s.hmu.Unlock()
			if err := hs.replace(h); err != nil {
				f.Err = err.Error()
			}
			s.record(f)
		case FaultKillRun:
			s.killRun(ctx)
		}
	}
}

// killRun SIGKILLs an `etcdlock run` whose job is running, and checks
// that the job and its shell die with it.
func (s *suite) killRun(ctx context.Context) {
	var h *holder
	var pids []int
	deadline := time.Now().Add(5 * time.Second)
	for h == nil && time.Now().Before(deadline) && ctx.Err() == nil {
		s.hmu.Lock()
		var cands []*holder
		for _, c := range s.holders {
			if c.run && c.proc != nil && !c.proc.exited() {
				cands = append(cands, c)
			}
		}
		s.hmu.Unlock()
		for _, c := range cands {
			if p := jobPIDs(c); p != nil && alive(p[0]) {
				h, pids = c, p
				break
			}
		}
		if h == nil {
			sleepCtx(ctx, 10*time.Millisecond)
		}
	}
	if h == nil {
		return
	}
	for _, pid := range pids {
		s.ps.adopt(pid)
	}
	f := FaultRecord{Kind: FaultKillRun, Target: fmt.Sprintf("%s (job %d, shell %d)", h.name, pids[0], pids[1]), Start: s.now()}
	h.proc.signal(syscall.SIGKILL) // etcdlock run alone: its guard must take its child down
	<-h.proc.done
	gone := time.Now().Add(5 * time.Second)
	for (alive(pids[0]) || alive(pids[1])) && time.Now().Before(gone) {
		time.Sleep(5 * time.Millisecond)
	}
	var left []int
	for _, pid := range pids {
		if alive(pid) {
			left = append(left, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range left { // reaped by whoever adopted them; gone in a moment
		for end := time.Now().Add(5 * time.Second); alive(pid) && time.Now().Before(end); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	s.hmu.Lock()
	h.killedAt = s.now()
	if len(left) > 0 {
		f.Err = fmt.Sprintf("processes %v outlived the killed etcdlock run by 5s", left)
		s.outlive = append(s.outlive, h.name+": "+f.Err)
	}
	s.hmu.Unlock()
	s.record(f)
}

// slow makes worker h's links to etcd slow, asks it for a long critical
// section, and cuts its requests while that section lasts; it mends the
// links and returns what happened. Answers are delayed by the proxy in
// front of each member by 0.35 TTL; requests are dropped one way only.
//
//  1. Its answers come late for half a TTL and until its current
//     section's Unlock, given a quarter of the TTL, has timed out (for at
//     most 2 TTL): that Unlock lands at the server all the same, and h
//     retries it after its next Lock, on the same lease.
//  2. Links mended, h is asked to linger at its next pause point (SIGHUP):
//     for three TTLs, or until its hold's Done closes.
//  3. Once it lingers, and no member fault is in progress (none starts
//     until the end), its answers come late again for one TTL (by
//     Config.lingerDelay, when set): its renewals reach the server at
//     once, their answers late.
//  4. Then its requests are dropped for 1.5 TTL, its answers still late:
//     its lease expires at the server while it holds. A holder that
//     measures its deadline from a renewal's sending is told before the
//     expiry; one that measured from the answer's arrival believes it
//     holds for 0.35 TTL less the library's margin (a fifth of the TTL)
//     and etcd's expiry granularity (up to 500 ms) after its key was
//     deleted: with a TTL of 4 s, always past checker (1)'s tolerance.
func (s *suite) slow(ctx context.Context, h *holder) string {
	ctx = context.WithoutCancel(ctx) // the end of the faults does not cut it short
	ttl := s.cfg.TTL
	late := ttl * 35 / 100
	delay := func(on bool) {
		for _, p := range h.links {
			if on {
				p.setDelay(late)
			} else {
				p.setDelay(0)
			}
		}
	}
	// 1.
	tok := heldToken(h)
	delay(true)
	start := time.Now()
	for time.Since(start) < ttl/2 || (tok > 0 && heldToken(h) == tok && time.Since(start) < 2*ttl) {
		sleepCtx(ctx, 20*time.Millisecond)
	}
	sleepCtx(ctx, ttl/4)
	delay(false)
	// 2.
	h.proc.signal(syscall.SIGHUP)
	var lingering int64
	for end := time.Now().Add(5 * ttl); lingering == 0 && time.Now().Before(end) && !h.proc.exited(); {
		sleepCtx(ctx, 20*time.Millisecond)
		lingering = lingerToken(h)
	}
	if lingering == 0 {
		return "it did not linger"
	}
	// 3. No member fault meanwhile: what delays h's renewals is its
	// links alone.
	s.quiet.RLock()
	defer s.quiet.RUnlock()
	if s.cfg.lingerDelay > 0 {
		late = s.cfg.lingerDelay
	}
	delay(true)
	sleepCtx(ctx, ttl)
	// 4.
	for _, p := range h.links {
		p.setDrop(true)
	}
	sleepCtx(ctx, ttl*3/2)
	for _, p := range h.links {
		p.setDrop(false)
	}
	delay(false)
	return fmt.Sprintf("lingering with token %d", lingering)
}

// lingerToken returns the token of worker h's last lingering hold, by its
// history, or 0.
func lingerToken(h *holder) int64 {
	lines, _, err := record.Read(h.hist)
	if err != nil {
		return 0
	}
	var tok int64
	for _, l := range lines {
		if l.Kind == record.Linger {
			tok = l.Token
		}
	}
	return tok
}

// holding reports whether worker h holds its lock now, by its history.
func holding(h *holder) bool { return heldToken(h) > 0 }

// heldToken returns the token of the hold worker h has been granted and
// not yet asked to unlock, by its history, or 0.
func heldToken(h *holder) int64 {
	lines, _, err := record.Read(h.hist)
	if err != nil {
		return 0
	}
	var tok int64
	for _, l := range lines {
		switch l.Kind {
		case record.Grant:
			tok = l.Token
		case record.Unlock, record.Done:
			if l.Token == tok {
				tok = 0
			}
		}
	}
	return tok
}
