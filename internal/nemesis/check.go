package nemesis

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Checker names, the keys of Row.Violations.
const (
	// CheckGrants is checker (1): the replay of the healthy watcher's
	// events against the grants the library reported.
	CheckGrants = "grants"
	// CheckLinearizable is checker (2): porcupine over the fenced register.
	CheckLinearizable = "porcupine"
	// CheckCounter is checker (3): no lost acknowledged update.
	CheckCounter = "counter"
	// CheckObserve is checker (4): Observe never goes back in time and
	// reports only leaders.
	CheckObserve = "observe"
	// CheckCleanup: no key left under a workload's namespace at its end.
	CheckCleanup = "cleanup"
)

var checkers = []string{CheckGrants, CheckLinearizable, CheckCounter, CheckObserve, CheckCleanup}

// Finding is one violation, with the checker that found it.
type Finding struct {
	Checker string `json:"checker"`
	What    string `json:"what"`
}

type lockKind int

const (
	exclusive lockKind = iota // mutex, election: the oldest key holds
	readWrite                 // RWMutex: readers under r/, writers under w/
	semaphore                 // permits in the value, at most limit
)

// lockSpec says where a lock's keys are and how its holders are derived.
type lockSpec struct {
	prefix string
	kind   lockKind
	limit  int64 // semaphore
}

// life is one key of a lock from its creation to its deletion, replayed
// from the watcher's events.
type life struct {
	key    string
	create int64
	lease  int64
	weight int64
	writer bool
	del    int64 // deletion revision, 0 while alive at the end
	delAt  int64 // when the watcher received the deletion
	admit  int64 // first revision at which the rule admitted it, 0 if never
	values []valueAt
}

type valueAt struct {
	rev   int64
	value string
}

// replay derives the lives of spec's keys from events, and for each the
// first revision at which the lock's rule admitted it. Admission is
// monotone under every rule here: once admitted, a key stays admitted
// until deleted, since keys created later are never ahead of it.
func replay(events []Event, spec lockSpec) []*life {
	var (
		all   []*life
		alive []*life // in create order
	)
	i := 0
	for i < len(events) {
		rev := events[i].Rev
		touched := false
		for ; i < len(events) && events[i].Rev == rev; i++ {
			ev := events[i]
			if !strings.HasPrefix(ev.Key, spec.prefix) {
				continue
			}
			touched = true
			j := slices.IndexFunc(alive, func(l *life) bool { return l.key == ev.Key })
			switch {
			case ev.Delete && j >= 0:
				alive[j].del, alive[j].delAt = ev.Rev, ev.At
				alive = slices.Delete(alive, j, j+1)
			case ev.Delete:
			case j >= 0:
				alive[j].values = append(alive[j].values, valueAt{ev.Rev, ev.Value})
			default:
				l := &life{key: ev.Key, create: ev.Create, lease: ev.Lease, weight: 1,
					writer: strings.HasPrefix(ev.Key, spec.prefix+"w/"),
					values: []valueAt{{ev.Rev, ev.Value}}}
				if spec.kind == semaphore {
					l.weight = semWeight(ev.Value)
				}
				all = append(all, l)
				alive = append(alive, l)
			}
		}
		if touched {
			admit(alive, spec, rev)
		}
	}
	return all
}

// admit marks the keys that spec's rule admits at rev.
func admit(alive []*life, spec lockSpec, rev int64) {
	var seenAny, seenWriter bool
	var sum int64
	for _, l := range alive {
		ok := false
		switch spec.kind {
		case exclusive:
			ok = !seenAny
		case readWrite:
			if l.writer {
				ok = !seenAny
			} else {
				ok = !seenWriter
			}
		case semaphore:
			ok = sum+l.weight <= spec.limit
			sum += l.weight
		}
		seenAny = true
		seenWriter = seenWriter || l.writer
		if ok && l.admit == 0 {
			l.admit = rev
		}
	}
}

// semWeight parses the permits of a semaphore key's value
// "v1 <permits> <limit> <holder>"; anything else weighs more than any limit.
func semWeight(v string) int64 {
	f := strings.SplitN(v, " ", 4)
	if len(f) == 4 && f[0] == "v1" {
		if k, err := strconv.ParseInt(f[1], 10, 64); err == nil && k > 0 {
			return k
		}
	}
	return 1 << 40
}

// leaseUse returns, for each lease, the highest revision at which a key was
// written with it: the lease was alive then.
func leaseUse(events []Event) map[int64]int64 {
	m := make(map[int64]int64)
	for _, ev := range events {
		if !ev.Delete && ev.Lease != 0 && ev.Rev > m[ev.Lease] {
			m[ev.Lease] = ev.Rev
		}
	}
	return m
}

// grantResult is what checker (1) found for one lock.
type grantResult struct {
	findings []Finding
	expiries int // keys of live holders deleted by the end of their lease
	// early describes the expiries that etcd made before the TTL it had
	// acknowledged (Grant.LeaseAcked) that the timing checks would have
	// flagged, whose holders were told by that TTL's end.
	early []string
}

func (r *grantResult) add(format string, args ...any) {
	r.findings = append(r.findings, Finding{CheckGrants, fmt.Sprintf(format, args...)})
}

// checkGrants is checker (1). What "every success the library reported was
// true at the revision it reported" means here: the library does not
// expose the revision of the read that decided a grant, but that read was
// made before the acquire returned, so its revision is at most RPost, the
// revision of a linearizable read started after the return. A reported
// grant (key K, token T) is true iff
//
//   - K was created at revision T (the token is the key's create revision),
//   - at some revision r with T <= r <= RPost, K was alive and the lock's
//     rule admitted it (mutex and election: K was the oldest key; RW: no
//     older writer for a reader, no older key at all for a writer;
//     semaphore: the permits of the older keys plus K's fit in the limit).
//
// Admission is monotone, so this is: K's first admitted revision A exists,
// A <= RPost, and K was not deleted before A.
//
// For a semaphore, the permits reported with a grant must be those its key
// takes. From the lives it also checks that at every revision the keys of
// reported grants (with the permits their holders were told of), each
// counted from A (or from RPost if earlier, or from its creation if never
// admitted) until its deletion, are no more than the lock allows; that a grant made after another's key was deleted has a
// larger token; that a reported hold's key is deleted only by its own
// unlock, by the end of its lease, or by the library once it had told the
// holder the hold was lost (a key deleted while its holder still believed
// it held and its lease was still used afterwards was deleted by someone
// else: a stale unlock); and
// that a holder whose key was deleted by its lease's end was told (Done
// closed) no later than the watcher saw the deletion (give or take
// lateTolerance). Such a deletion, of a hold whose worker had not asked to
// unlock by then, is a lease expiry under a live holder.
func checkGrants(spec lockSpec, lives []*life, grants []*Grant, leases map[int64]int64) grantResult {
	var res grantResult
	byKey := make(map[string][]*life)
	for _, l := range lives {
		byKey[l.key] = append(byKey[l.key], l)
	}
	type matched struct {
		g *Grant
		l *life
	}
	var ms []matched
	for _, g := range grants {
		var l *life
		for _, c := range byKey[g.Key] {
			if c.create == g.Token {
				l = c
			}
		}
		if l == nil {
			creates := make([]string, 0, len(byKey[g.Key]))
			for _, c := range byKey[g.Key] {
				creates = append(creates, strconv.FormatInt(c.create, 10))
			}
			res.add("%s: reported token %d for %s, but the key was created at revisions [%s]",
				g.Worker, g.Token, g.Key, strings.Join(creates, " "))
			continue
		}
		switch {
		case l.admit == 0:
			res.add("%s: reported grant %d@%s was never true: the key (deleted at %d) was never admitted",
				g.Worker, g.Token, g.Key, l.del)
		case g.RPost > 0 && l.admit > g.RPost:
			res.add("%s: reported grant %d@%s was not true when reported: first admitted at %d, after revision %d read after the grant",
				g.Worker, g.Token, g.Key, l.admit, g.RPost)
		}
		if spec.kind == semaphore && g.Weight != l.weight {
			res.add("%s: reported %d permits for %d@%s, but its key takes %d",
				g.Worker, g.Weight, g.Token, g.Key, l.weight)
		}
		ms = append(ms, matched{g, l})
	}

	// Tokens rise: a grant admitted after another grant's key was deleted
	// has a larger token.
	byAdmit := slices.Clone(ms)
	sort.Slice(byAdmit, func(i, j int) bool { return byAdmit[i].l.admit < byAdmit[j].l.admit })
	var ended []matched
	for _, m := range ms {
		if m.l.del > 0 {
			ended = append(ended, m)
		}
	}
	sort.Slice(ended, func(i, j int) bool { return ended[i].l.del < ended[j].l.del })
	var maxTok int64
	maxFrom := ""
	k := 0
	for _, m := range byAdmit {
		if m.l.admit == 0 {
			continue
		}
		for ; k < len(ended) && ended[k].l.del <= m.l.admit; k++ {
			if ended[k].g.Token > maxTok {
				maxTok, maxFrom = ended[k].g.Token, ended[k].g.Key
			}
		}
		if m.g.Token <= maxTok {
			res.add("%s: token %d@%s not above token %d@%s of a hold that ended before it was granted",
				m.g.Worker, m.g.Token, m.g.Key, maxTok, maxFrom)
		}
	}

	// Holders at every revision.
	type point struct {
		rev   int64
		start bool
		m     matched
	}
	var pts []point
	for _, m := range ms {
		s := m.l.create
		if m.l.admit > 0 {
			s = m.l.admit
		}
		if m.g.RPost > 0 && m.g.RPost < s && m.g.RPost >= m.l.create {
			s = m.g.RPost
		}
		if m.l.del > 0 && s >= m.l.del {
			continue
		}
		pts = append(pts, point{s, true, m})
		if m.l.del > 0 {
			pts = append(pts, point{m.l.del, false, m})
		}
	}
	sort.SliceStable(pts, func(i, j int) bool {
		if pts[i].rev != pts[j].rev {
			return pts[i].rev < pts[j].rev
		}
		return !pts[i].start && pts[j].start // ends first
	})
	var writers, readers, weight int64
	reported := 0
	for i, p := range pts {
		d := int64(1)
		if !p.start {
			d = -1
		}
		switch {
		case spec.kind == readWrite && p.m.g.Writer:
			writers += d
		case spec.kind == readWrite:
			readers += d
		default:
			// The permits the holder was told it has, or its key takes if
			// more.
			weight += d * max(p.m.g.Weight, p.m.l.weight)
		}
		if i+1 < len(pts) && pts[i+1].rev == p.rev {
			continue // judge after every change at this revision
		}
		if bad := spec.exceeded(writers, readers, weight); bad != "" && reported < 5 {
			res.add("at revision %d the reported holds alive were %s (last change: %s %d@%s)", p.rev, bad, p.m.g.Worker, p.m.g.Token, p.m.g.Key)
			reported++
		}
	}

	// Leases etcd ended before the TTL it had acknowledged. The library
	// times a hold's deadline from the send of the last renewal etcd
	// answered, which is sound only if etcd keeps the lease for the TTL
	// it granted from then. etcd does not always: a leader that was
	// paused, or cut off while its raft loop went on ticking, can answer
	// renewals the next leader never sees, and, resumed, propose the
	// revocation of leases that look expired from its stale view, which
	// it forwards to the new leader once it has stepped down
	// (etcd-io/etcd#15247, #12528). No client can see that coming: its
	// holder learns at its key's delete, or at its next renewal, and the
	// next waiter may be granted first. Such a hold is exempt from the
	// two timing checks below (the holder told before another was
	// granted, and by the time the watcher saw the delete) if its holder
	// was told by the time the acknowledged lease would have ended
	// (LeaseAcked, which its deadline precedes by the library's margin);
	// the revision checks above and the fences, checked elsewhere, still
	// apply. Those the exemption spared from a finding are listed apart.
	early := make(map[*Grant]bool)
	for _, m := range ms {
		g, l := m.g, m.l
		switch {
		case l.del == 0 || g.LeaseAcked == 0 || l.delAt >= g.LeaseAcked:
			continue // not ended, or not before its acknowledged end
		case leases[l.lease] > l.del:
			continue // its lease lived on: someone deleted the key
		case g.UnlockAt > 0 && g.UnlockAt <= l.delAt:
			continue // its own unlock came first
		case g.DoneAt > 0 && g.DoneAt <= g.LeaseAcked+int64(lateTolerance):
			early[g] = true
		}
	}
	// believedUntil is when g's worker stopped believing it held.
	believedUntil := func(g *Grant) int64 {
		end := int64(never)
		if g.UnlockAt > 0 {
			end = g.UnlockAt
		}
		if g.DoneAt > 0 {
			end = min(end, g.DoneAt-int64(lateTolerance))
		}
		return end
	}
	for _, m := range ms {
		g, l := m.g, m.l
		if !early[g] {
			continue
		}
		told := max(l.delAt, g.Return)
		why := ""
		if g.DoneAt > told+int64(lateTolerance) {
			why = fmt.Sprintf("its holder was told %v after the watcher saw it", ms2(g.DoneAt-told))
		}
		if spec.kind == exclusive {
			for _, o := range ms {
				if o.g.Token > g.Token && o.g.Return >= g.Return && o.g.Return < believedUntil(g) {
					why = fmt.Sprintf("its holder was told %v after %s was granted %d", ms2(g.DoneAt-o.g.Return), o.g.Worker, o.g.Token)
					break
				}
			}
		}
		if why != "" {
			res.early = append(res.early, fmt.Sprintf("%s: lease %x of %d@%s ended at revision %d, seen %v before the end of the TTL etcd had acknowledged; %s",
				g.Worker, l.lease, g.Token, g.Key, l.del, ms2(g.LeaseAcked-l.delAt), why))
		}
	}

	// Holders' beliefs: from its return until its worker asked to unlock
	// or it was told the hold was lost (less lateTolerance, for the delay
	// in recording DoneAt), a hold's worker believes it holds. The holds
	// believed at once must be no more than the lock allows. This does
	// not rely on when the watcher received a deletion, which may be late
	// (a watch behind a restarted or paused member), and so bounds the
	// told-in-time check below from the other side.
	type belief struct {
		at    int64
		start bool
		g     *Grant
	}
	var bs []belief
	for _, m := range ms {
		g := m.g
		if early[g] {
			continue // see early above
		}
		end := believedUntil(g)
		if end <= g.Return {
			continue
		}
		bs = append(bs, belief{g.Return, true, g}, belief{end, false, g})
	}
	sort.SliceStable(bs, func(i, j int) bool {
		if bs[i].at != bs[j].at {
			return bs[i].at < bs[j].at
		}
		return !bs[i].start && bs[j].start // ends first
	})
	writers, readers, weight = 0, 0, 0
	reported = 0
	for _, b := range bs {
		d := int64(1)
		if !b.start {
			d = -1
		}
		switch {
		case spec.kind == readWrite && b.g.Writer:
			writers += d
		case spec.kind == readWrite:
			readers += d
		default:
			weight += d * max(b.g.Weight, 1)
		}
		if !b.start {
			continue
		}
		if bad := spec.exceeded(writers, readers, weight); bad != "" && reported < 5 {
			res.add("%s: when granted %d@%s at %v, its holder and others believed they had %s",
				b.g.Worker, b.g.Token, b.g.Key, ms2(b.at), bad)
			reported++
		}
	}

	// Who deleted each reported hold's key, and was its holder told in time?
	for _, m := range ms {
		g, l := m.g, m.l
		if l.del == 0 {
			continue
		}
		if g.UnlockAt > 0 && g.UnlockAt <= l.delAt {
			continue // its own unlock, or its lease ending after it asked
		}
		if leases[l.lease] > l.del {
			if g.DoneAt > 0 && g.DoneAt <= l.delAt+int64(lateTolerance) && g.DoneCause == causeDeadline {
				// The library had given the hold up (its deadline passed)
				// and deleted its key itself, guarded by its revision. It
				// deletes only after Done has closed, but DoneAt is
				// recorded by a goroutine that Done's closing starts, which
				// may run after the watcher received the delete.
				continue
			}
			res.add("%s: hold %d@%s deleted at revision %d by someone else: its lease %x was still alive at revision %d",
				g.Worker, g.Token, g.Key, l.del, l.lease, leases[l.lease])
			continue
		}
		// Its lease ended. The holder must be told by the time the watcher
		// saw the delete; if that was before the grant was even returned,
		// as soon as it was returned.
		told := max(l.delAt, g.Return)
		res.expiries++
		if early[g] {
			continue // see early above
		}
		if g.DoneAt == 0 || g.DoneAt > told+int64(lateTolerance) {
			late := "never"
			if g.DoneAt > 0 {
				late = fmt.Sprintf("%v late", ms2(g.DoneAt-told))
			}
			res.add("%s: holder of %d@%s told of the loss %s: the watcher saw its lease end delete the key at revision %d",
				g.Worker, g.Token, g.Key, late, l.del)
		}
	}
	return res
}

// lateTolerance is how much later than the watcher's receipt of the
// deletion a holder may be told of its loss before checker (1) calls it
// late. The library's margin (a fifth of the TTL) and the server's lease
// expiry granularity (500 ms) normally put the holder's notice hundreds of
// milliseconds ahead; the tolerance only absorbs scheduling delays of this
// process (timers, goroutines) under the race detector on two cores.
const lateTolerance = 100 * time.Millisecond

// ms2 formats nanoseconds as milliseconds.
func ms2(ns int64) string { return fmt.Sprintf("%.0fms", float64(ns)/1e6) }

// checkObserve is checker (4): the leaders an observer received never go
// back in time (terms only grow), and each reported leader did lead, with
// the reported value, at some revision.
func checkObserve(lives []*life, obs []Observation) []Finding {
	var out []Finding
	add := func(format string, args ...any) {
		if len(out) < 10 {
			out = append(out, Finding{CheckObserve, fmt.Sprintf(format, args...)})
		}
	}
	byKey := make(map[string][]*life)
	for _, l := range lives {
		byKey[l.key] = append(byKey[l.key], l)
	}
	var last int64
	for _, o := range obs {
		if o.Token == 0 {
			continue // no leader
		}
		if o.Token < last {
			add("observed term %d after term %d: went back in time", o.Token, last)
		}
		last = max(last, o.Token)
		var l *life
		for _, c := range byKey[o.Key] {
			if c.create == o.Token {
				l = c
			}
		}
		if l == nil || l.admit == 0 {
			add("observed leader %d@%s never led", o.Token, o.Key)
			continue
		}
		ok := false
		for i, v := range l.values {
			end := int64(1 << 62)
			if i+1 < len(l.values) {
				end = l.values[i+1].rev
			}
			if l.del > 0 {
				end = min(end, l.del)
			}
			if v.value == o.Value && max(v.rev, l.admit) < end {
				ok = true
				break
			}
		}
		if !ok {
			add("observed leader %d@%s with value %q, which it never had while leading", o.Token, o.Key, o.Value)
		}
	}
	return out
}

// counterResult is what checker (3) found for one register.
type counterResult struct {
	acked, unknown int
	lost           int // acknowledged increments overwritten
	findings       []Finding
}

// checkCounter is checker (3). Every write of a counter chain writes the
// value it read plus one, so acknowledged writes must all have written
// different values (two with the same value mean one overwrote the other:
// a lost update), and the final value must be at least the highest
// acknowledged value and at most one per acknowledged or unknown write.
func checkCounter(acc []Access, final int64) counterResult {
	var r counterResult
	seen := make(map[int64]int)
	var maxAcked int64
	for _, a := range acc {
		if !a.Write {
			continue
		}
		switch a.Status {
		case OK:
			r.acked++
			seen[a.Value]++
			maxAcked = max(maxAcked, a.Value)
		case Unknown:
			r.unknown++
		}
	}
	r.lost = r.acked - len(seen)
	if r.unknown == 0 && final < int64(r.acked) {
		r.lost = max(r.lost, r.acked-int(final)) // exact when every write's outcome is known
	}
	if r.lost > 0 {
		r.findings = append(r.findings, Finding{CheckCounter, fmt.Sprintf("%d acknowledged increments lost (%d acknowledged writes wrote %d distinct values)", r.lost, r.acked, len(seen))})
	}
	if final < maxAcked {
		r.findings = append(r.findings, Finding{CheckCounter, fmt.Sprintf("final value %d below the acknowledged value %d", final, maxAcked)})
	}
	if final > int64(r.acked+r.unknown) {
		r.findings = append(r.findings, Finding{CheckCounter, fmt.Sprintf("final value %d above the %d acknowledged and %d unknown increments", final, r.acked, r.unknown)})
	}
	return r
}

// exceeded says how holds alive at once break the lock's rule (one holder;
// no writer with anyone else; at most limit permits), or "" if they do not.
// writers and readers count a read-write lock's holds, weight the others'.
func (spec lockSpec) exceeded(writers, readers, weight int64) string {
	switch spec.kind {
	case exclusive:
		if weight > 1 {
			return fmt.Sprintf("%d holders", weight)
		}
	case readWrite:
		if writers > 1 || (writers == 1 && readers > 0) {
			return fmt.Sprintf("%d writers and %d readers", writers, readers)
		}
	case semaphore:
		if weight > spec.limit {
			return fmt.Sprintf("%d permits of %d", weight, spec.limit)
		}
	}
	return ""
}
