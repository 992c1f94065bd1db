package nemesis

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file exports the checkers and the watcher to suites that record
// their histories elsewhere, such as internal/procnemesis, whose holders
// are processes of their own.

// CauseDeadline is Grant.DoneCause for a hold the library gave up because
// its lease's deadline passed without a renewal.
const CauseDeadline = causeDeadline

// LockHistory is one lock's records, for CheckLock.
type LockHistory struct {
	// Prefix is the lock's key prefix, ending in '/'.
	Prefix string
	// RW is true for an RWMutex (readers under Prefix+"r/", writers
	// under Prefix+"w/"), false for a Mutex.
	RW bool
	// Events are the watcher's, from before the first grant on; events
	// of other prefixes are ignored.
	Events []Event
	// Grants are the holds the library reported, with DoneAt and
	// DoneCause filled in.
	Grants []*Grant
}

// CheckLock runs checker (1) (CheckGrants) on h: it returns the findings,
// how many reported holds ended by their lease's end under a holder that
// had not asked to unlock, and, among those, the ones etcd ended before
// the TTL it had acknowledged (Grant.LeaseAcked) that the timing checks
// would have flagged, whose holders were told by that TTL's end: etcd's
// early revocations, not findings.
func CheckLock(h LockHistory) (findings []Finding, expiries int, early []string) {
	spec := lockSpec{prefix: h.Prefix, kind: exclusive}
	if h.RW {
		spec.kind = readWrite
	}
	res := checkGrants(spec, replay(h.Events, spec), h.Grants, leaseUse(h.Events))
	return res.findings, res.expiries, res.early
}

// RegisterVerdict is what CheckRegister found.
type RegisterVerdict struct {
	// Porcupine is LinOK, LinIllegal or LinTimeout.
	Porcupine string
	// Lost is the number of acknowledged increments lost.
	Lost int
	// Findings are the counter checker's findings (CheckCounter), and a
	// CheckLinearizable finding when porcupine found the history illegal.
	Findings []Finding
}

// CheckRegister runs checkers (2) and (3) on the accesses to one counter
// register whose final value is final: porcupine against the fenced
// register (strict: a high-water-mark fence, which must admit every token
// at least the highest; otherwise the resource may refuse more), bounded
// by timeout, and the counter chain's lost updates.
func CheckRegister(acc []Access, final int64, strict bool, timeout time.Duration) RegisterVerdict {
	var v RegisterVerdict
	v.Porcupine, _ = checkLinearizable(acc, strict, timeout, "")
	if v.Porcupine == LinIllegal {
		v.Findings = append(v.Findings, Finding{CheckLinearizable, "the register's history is not linearizable"})
	}
	c := checkCounter(acc, final)
	v.Lost = c.lost
	v.Findings = append(v.Findings, c.findings...)
	return v
}

// Watcher follows every change under a prefix, through a client that no
// fault touches, and records it as an Event whose At is the time since
// start. It is safe for concurrent use; Stop it.
type Watcher struct{ w *watcher }

// StartWatcher starts watching prefix from revision from on; it does no
// blocking I/O. A compaction past what it has read is a gap: Err returns it.
func StartWatcher(cli *clientv3.Client, prefix string, from int64, start time.Time) *Watcher {
	return &Watcher{startWatcher(cli, prefix, from, start)}
}

// Consumed returns the revision up to which every event has been received.
func (w *Watcher) Consumed() int64 { return w.w.Consumed() }

// CatchUp blocks until the watcher has seen every change made before the
// call, or ctx ends, or the history has a gap (its error is returned).
func (w *Watcher) CatchUp(ctx context.Context) error { return w.w.catchUp(ctx) }

// Events returns the events received so far.
func (w *Watcher) Events() []Event { return w.w.Events() }

// Err returns the gap in the history, if any.
func (w *Watcher) Err() error { return w.w.err() }

// Stop stops the watcher and waits for it.
func (w *Watcher) Stop() { w.w.stop() }
