package embedded

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Faults injected through this file are bounded: each function undoes its
// fault before it returns, when its duration has passed or when its context
// ends, whichever comes first, and starts no goroutine that outlives it.
// Undoing (restarting a stopped member, healing a partition, resuming,
// unpausing) runs on a context of its own bounded by [FaultUndoTimeout], so
// that an ended context never leaves a member stopped or a proxy paused.
// Faults nest: undoing one fault ends only its own part, so that faults
// overlapping in time (say, in the lanes of several [Schedule]s) each last
// their full term.

// FaultUndoTimeout bounds how long a fault function waits for its own undo
// step (mostly a member restart becoming ready) after its duration.
const FaultUndoTimeout = 20 * time.Second

// Faults injects faults into the members of a [Cluster]: restarts,
// partitions, leadership moves, paused raft traffic and compaction. The
// functions of this file that take proxies ([PauseClient],
// [BlackholeClient], [DelayClientResponses], [DropClientRequests]) inject the
// faults of clients. A Faults is safe for concurrent use, and its faults
// nest (see [Cluster.Isolate]): a partition, the crash of a restart and a
// pause of a member's traffic each cut links that the end of another fault
// does not mend, so faults on the same or on different members may
// overlap.
type Faults struct {
	c   *Cluster
	cli *clientv3.Client // direct client of all members, for compaction
	lg  *zap.Logger

	mu     sync.Mutex
	undos  map[int]func() // partitions in effect, by the id undo gave them
	nextID int
	closed bool
}

// NewFaults returns the fault injector of c. It creates a client of all
// members for [Faults.Compact] without blocking on the network; call
// [Faults.Close] when done. lg logs each fault at start and end; nil means
// no logging.
func NewFaults(c *Cluster, lg *zap.Logger) (*Faults, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	cli, err := c.NewClient()
	if err != nil {
		return nil, fmt.Errorf("integration: faults client: %w", err)
	}
	return &Faults{c: c, cli: cli, lg: lg.Named("faults"), undos: make(map[int]func())}, nil
}

// Cluster returns the cluster the faults are injected into.
func (f *Faults) Cluster() *Cluster { return f.c }

// Close undoes every partition and pause of f that is still in effect
// (those made by calling [Cluster.Isolate] directly stay) and closes the
// client. It is idempotent. Fault functions still running when Close is
// called end when their term does, without undoing anything again.
func (f *Faults) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	undos := f.undos
	f.undos = map[int]func(){}
	f.mu.Unlock()
	for _, undo := range undos {
		undo()
	}
	if err := f.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// sleep waits for d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// undoContext returns a context for an undo step: not cancelled with ctx,
// bounded by FaultUndoTimeout.
func undoContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), FaultUndoTimeout)
}

// track records a partition of f in effect, undone by undo, and returns
// the function that undoes it once (at the fault's end or at Close,
// whichever comes first).
func (f *Faults) track(undo func()) func() {
	var once sync.Once
	undoOnce := func() { once.Do(undo) }
	f.mu.Lock()
	id := f.nextID
	f.nextID++
	f.undos[id] = undoOnce
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.undos, id)
		f.mu.Unlock()
		undoOnce()
	}
}

// isolate isolates member i until the returned function is called.
func (f *Faults) isolate(i int) (heal func()) {
	f.c.Isolate(i)
	return f.track(func() { f.c.Heal(i) })
}

func (f *Faults) member(i int) error {
	if n := len(f.c.Members()); i < 0 || i >= n {
		return fmt.Errorf("integration: member index %d out of range [0,%d)", i, n)
	}
	return nil
}

// RestartMember crashes member i, as far as its peers can tell, keeps it
// down for down (or until ctx ends), and starts it again from its data,
// waiting until it is ready. The crash: the member is first cut off from
// its peers ([Cluster.Isolate]), so that they lose it abruptly and, if it
// led, elect a new leader after an election timeout; then it is stopped
// ([Member.Stop], which no longer hands over leadership since the member
// no longer leads), and this isolation ends. Other partitions and pauses
// in effect stay, also those of member i, and are re-applied at the
// restart (see [Member.Restart]). The graceful stop lets requests already
// in flight on the member finish, as a crash would not; [Member.HardStop]
// fails them instead.
//
// The restart happens even when ctx has ended, bounded by
// [FaultUndoTimeout]. It returns ctx's error if ctx ended first, else the
// restart's error. It blocks for about down plus the stop (up to etcd's
// request timeout, about 5 s, while clients keep watches open on the
// member) plus the restart (a few hundred milliseconds).
func (f *Faults) RestartMember(ctx context.Context, i int, down time.Duration) error {
	if err := f.member(i); err != nil {
		return err
	}
	m := f.c.Member(i)
	f.lg.Info("restart member: stopping", zap.String("member", m.Name()), zap.Duration("down", down))
	heal := f.isolate(i)
	if srv := m.EtcdServer(); srv != nil {
		// A leader steps down once it misses a quorum for an election
		// timeout (check quorum); stopping it before that would make it
		// try to hand over leadership.
		deadline := time.Now().Add(2 * time.Second)
		for uint64(srv.MemberID()) == srv.Lead() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	_ = m.Stop()
	heal()
	sleep(ctx, down)
	uctx, cancel := undoContext(ctx)
	defer cancel()
	err := m.Restart(uctx)
	f.lg.Info("restart member: restarted", zap.String("member", m.Name()), zap.Error(err))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// RestartLeader is [Faults.RestartMember] on the current leader, which it
// waits for (until ctx ends). It returns the leader's index.
func (f *Faults) RestartLeader(ctx context.Context, down time.Duration) (int, error) {
	lead, err := f.c.WaitLeader(ctx)
	if err != nil {
		return -1, err
	}
	return lead, f.RestartMember(ctx, lead, down)
}

// PartitionLeader isolates the current leader from the other members
// ([Cluster.Isolate]) for d or until ctx ends, then heals the partition. The
// isolated member keeps serving its clients what it can (nothing
// linearizable); the others elect a new leader after an election timeout.
// It returns the isolated member's index, and ctx's error if ctx ended
// first. It blocks for about d.
func (f *Faults) PartitionLeader(ctx context.Context, d time.Duration) (int, error) {
	lead, err := f.c.WaitLeader(ctx)
	if err != nil {
		return -1, err
	}
	return lead, f.PartitionMember(ctx, lead, d)
}

// PartitionMember isolates member i from the other members for d or until
// ctx ends, then ends this isolation: links that another partition still
// in effect cuts stay cut ([Cluster.Isolate] nests). It returns ctx's
// error if ctx ended first.
func (f *Faults) PartitionMember(ctx context.Context, i int, d time.Duration) error {
	if err := f.member(i); err != nil {
		return err
	}
	f.lg.Info("partition member", zap.Int("member", i), zap.Duration("for", d))
	defer f.isolate(i)()
	if !sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// MoveLeader transfers leadership from the current leader to the next
// member (index leader+1, wrapping around) and waits until a majority
// follows it, or until ctx ends. It returns the new leader's index.
func (f *Faults) MoveLeader(ctx context.Context) (int, error) {
	lead, err := f.c.WaitLeader(ctx)
	if err != nil {
		return -1, err
	}
	to := (lead + 1) % len(f.c.Members())
	f.lg.Info("move leader", zap.Int("from", lead), zap.Int("to", to))
	if err := f.c.MoveLeader(ctx, to); err != nil {
		return -1, err
	}
	return to, nil
}

// PauseMember pauses all raft traffic of member i for d or until ctx ends:
// the member drops every message it would send to its peers and every
// message it reads from them (its side of every link is cut, what
// PauseSending does), then this pause ends. Its clients stay connected but
// nothing it serves can commit; if it led, the others elect a new leader.
// Pauses nest with each other and with partitions ([Cluster.Isolate]):
// a link stays cut while any of them wants it cut. Like a partition, the
// pause applies to a stopped member when it restarts. It returns ctx's
// error if ctx ended first.
func (f *Faults) PauseMember(ctx context.Context, i int, d time.Duration) error {
	if err := f.member(i); err != nil {
		return err
	}
	f.lg.Info("pause member", zap.Int("member", i), zap.Duration("for", d))
	f.c.mute(i)
	defer f.track(func() { f.c.unmute(i) })()
	if !sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// Compact compacts the keyspace at revision min(current, floor) (floor 0
// means no floor), so that revisions below it can no longer be read or
// watched. It returns the revision it compacted at, 0 when there was
// nothing new to compact (that revision already compacted). One or two
// round trips.
func (f *Faults) Compact(ctx context.Context, floor int64) (int64, error) {
	resp, err := f.cli.Get(ctx, "\x00", clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	if floor > 0 && floor < rev {
		rev = floor
	}
	if rev <= 1 {
		return 0, nil
	}
	if _, err := f.cli.Compact(ctx, rev); err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			return 0, nil
		}
		return 0, err
	}
	return rev, nil
}

// Compactor compacts the keyspace every period until ctx ends, each time at
// the current revision or at floor() if that is lower (floor may be nil),
// so a watcher that reports the revision it has consumed never loses
// events it has not read. It returns the number of compactions done and
// the last error seen, if any (failures, e.g. while no leader is elected,
// are retried at the next period). It runs on the caller's goroutine.
func (f *Faults) Compactor(ctx context.Context, period time.Duration, floor func() int64) (int, error) {
	if period <= 0 {
		return 0, fmt.Errorf("integration: compactor period %v, want > 0", period)
	}
	t := time.NewTicker(period)
	defer t.Stop()
	var (
		n       int
		lastErr error
	)
	for {
		select {
		case <-ctx.Done():
			return n, lastErr
		case <-t.C:
		}
		var fl int64
		if floor != nil {
			fl = floor()
			if fl <= 0 {
				continue
			}
		}
		// The first compaction of a long history takes the server a while
		// (its index is compacted before it answers): give it 10 s.
		cctx, cancel := context.WithTimeout(ctx, max(period+time.Second, 10*time.Second))
		rev, err := f.Compact(cctx, fl)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			lastErr = err
		case rev > 0:
			n++
		}
	}
}

// PauseClient holds the traffic of the given proxies in both directions
// (see [Proxy.Pause]) for d or until ctx ends, then lets it through
// (unless another pause of the same proxy still holds it). It
// runs on the caller's goroutine, so a worker that calls it between two
// steps of its work is paused together with its connection: the pause of a
// whole process. A pause longer than a lease's TTL lets the lease expire at
// the server while the holder still believes it holds. It returns ctx's
// error if ctx ended first.
func PauseClient(ctx context.Context, d time.Duration, ps ...*Proxy) error {
	for _, p := range ps {
		p.Pause()
	}
	defer func() {
		for _, p := range ps {
			p.Unpause()
		}
	}()
	if !sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// BlackholeClient drops the traffic of the given proxies in both directions
// (see [Proxy.Blackhole]) for d or until ctx ends, then forwards it again
// (unless another blackhole of the same proxy still drops it: blackholes
// nest). The client's connections usually break and reconnect afterwards.
// It returns ctx's error if ctx ended first.
func BlackholeClient(ctx context.Context, d time.Duration, ps ...*Proxy) error {
	for _, p := range ps {
		p.Blackhole()
	}
	defer func() {
		for _, p := range ps {
			p.Unblackhole()
		}
	}()
	if !sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// DelayClientResponses delays the traffic from the server to the client
// through the given proxies by latency for d or until ctx ends. The proxy
// delays each chunk it reads in turn, so back-to-back responses queue up
// behind each other. A client then receives every answer at least latency
// after the server produced it: a lease renewal, for example, arrives well
// after the server renewed. Delays nest (see [Proxy.DelayResponses]): while
// several overlap on a proxy the longest latency applies, and each one's
// end leaves the others in effect. It returns ctx's error if ctx ended
// first.
func DelayClientResponses(ctx context.Context, d, latency time.Duration, ps ...*Proxy) error {
	for _, p := range ps {
		p.DelayResponses(latency)
	}
	defer func() {
		for _, p := range ps {
			p.UndelayResponses(latency)
		}
	}()
	if !sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// DropClientRequests drops the traffic from the client to the server
// through the given proxies for d or until ctx ends, while answers to
// requests that already reached the server still come back: a one-way
// partition (see [Proxy.BlackholeRequests]). It nests with other drops and
// blackholes of the same proxy: requests stay dropped until the last one
// ends. The client's connections usually break afterwards. It returns
// ctx's error if ctx ended first.
func DropClientRequests(ctx context.Context, d time.Duration, ps ...*Proxy) error {
	for _, p := range ps {
		p.BlackholeRequests()
	}
	defer func() {
		for _, p := range ps {
			p.UnblackholeRequests()
		}
	}()
	if !sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// Fault is one kind of fault a [Schedule] can inject. Inject picks its
// target and duration from rng (so that a schedule replays from its seed),
// injects the fault, undoes it before returning (also when ctx ends), and
// returns a description of the target ("m1", "mutex/w2 1.4s", ...).
type Fault struct {
	// Name names the kind of fault in records and logs ("restart-member").
	Name string
	// Inject injects one fault and undoes it, as the type's doc says; it
	// runs on the schedule's goroutine.
	Inject func(ctx context.Context, rng *rand.Rand) (target string, err error)
}

// FaultRecord is one fault a schedule injected.
type FaultRecord struct {
	// Name is the Fault's Name.
	Name string `json:"name"`
	// Target is what Inject returned: the member, client or value hit.
	Target string `json:"target"`
	// Start and End are when Inject was called and when it returned (the
	// fault undone).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Err is the text of the error Inject returned, "" if none: the fault
	// may not have been injected, or not undone cleanly.
	Err string `json:"err,omitempty"`
	// Stuck is set when Inject had not returned after the schedule's
	// StuckAfter: End is then when the schedule gave up on it, Target is
	// empty, and the fault may still be in effect.
	Stuck bool `json:"stuck,omitempty"`
}

// DefaultStuckAfter is how long a [Schedule] waits by default for one
// fault, its undo included, before it counts the fault as stuck. Every
// fault of this package ends well within it (a member restart, the
// longest, within about half of it).
const DefaultStuckAfter = 90 * time.Second

// FaultLog collects the records of one or more schedules. The zero value
// is ready to use; it is safe for concurrent use.
type FaultLog struct {
	mu      sync.Mutex
	records []FaultRecord
}

// Add appends r.
func (l *FaultLog) Add(r FaultRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
}

// Records returns a copy of the records, in the order they were added.
func (l *FaultLog) Records() []FaultRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]FaultRecord(nil), l.records...)
}

// Schedule injects faults one at a time, in an order and with targets and
// durations drawn from Seed, with a random gap between two faults, until
// its context ends. Two schedules with the same seed and faults make the
// same choices, though not at the same instants. Run several schedules at
// once (each on its own goroutine) to overlap faults.
type Schedule struct {
	// Seed seeds the choices.
	Seed uint64
	// Faults are the faults to pick from, uniformly.
	Faults []Fault
	// MinGap and MaxGap bound the pause before each fault (the first one
	// included). Optional, default 200 ms and 1 s.
	MinGap, MaxGap time.Duration
	// Log, if set, receives a record of each fault when it ends.
	Log *FaultLog
	// Logger, if set, logs each fault's start and end.
	Logger *zap.Logger
	// StuckAfter bounds how long one fault, its undo included, may run:
	// past it Run gives up on the fault (see Run). Optional, defaults to
	// DefaultStuckAfter.
	StuckAfter time.Duration
	// OnStuck, if set, is called on Run's goroutine when a fault is
	// stuck, with its record, while the fault still hangs: the time to
	// take a goroutine dump.
	OnStuck func(FaultRecord)
}

// Run runs the schedule until ctx ends, and returns the records of the
// faults it injected. A fault running when ctx ends is undone before Run
// returns. Each fault runs on a goroutine of its own while Run waits for
// it; one that has not returned after StuckAfter is stuck: Run calls
// OnStuck, and returns at once with the stuck fault's record last, leaving
// that goroutine behind, since nothing can end a call that hangs inside
// etcd. After a stuck fault, the cluster may still be partitioned or a
// member stopped: report it and end the process or test.
func (s *Schedule) Run(ctx context.Context) []FaultRecord {
	if len(s.Faults) == 0 {
		<-ctx.Done()
		return nil
	}
	lg := s.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	minGap, maxGap := s.MinGap, s.MaxGap
	if minGap <= 0 {
		minGap = 200 * time.Millisecond
	}
	if maxGap < minGap {
		maxGap = max(minGap, time.Second)
	}
	rng := rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))
	var out []FaultRecord
	for {
		gap := minGap + time.Duration(rng.Int64N(int64(maxGap-minGap)+1))
		if !sleep(ctx, gap) {
			return out
		}
		flt := s.Faults[rng.IntN(len(s.Faults))]
		// Each fault draws from its own generator, seeded from the
		// schedule's, so that its choices do not shift later ones.
		frng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		r := FaultRecord{Name: flt.Name, Start: time.Now()}
		lg.Info("fault start", zap.String("fault", flt.Name))
		target, ok, err := s.inject(ctx, flt, frng)
		r.Target, r.End = target, time.Now()
		switch {
		case !ok:
			r.Stuck = true
			r.Err = fmt.Sprintf("stuck: did not return within %v", s.stuckAfter())
			lg.Error("fault stuck", zap.String("fault", flt.Name), zap.Duration("after", s.stuckAfter()))
		case err != nil:
			r.Err = err.Error()
		}
		if ok {
			lg.Info("fault end", zap.String("fault", flt.Name), zap.String("target", target),
				zap.Duration("took", r.End.Sub(r.Start)), zap.Error(err))
		}
		out = append(out, r)
		if s.Log != nil {
			s.Log.Add(r)
		}
		if r.Stuck && s.OnStuck != nil {
			s.OnStuck(r)
		}
		if r.Stuck || ctx.Err() != nil {
			return out
		}
	}
}

func (s *Schedule) stuckAfter() time.Duration {
	if s.StuckAfter > 0 {
		return s.StuckAfter
	}
	return DefaultStuckAfter
}

// inject runs flt.Inject on a goroutine of its own and waits for it at most
// StuckAfter; ok is false if it did not return by then. The goroutine then
// ends when Inject does, if ever.
func (s *Schedule) inject(ctx context.Context, flt Fault, rng *rand.Rand) (target string, ok bool, err error) {
	type result struct {
		target string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		t, err := flt.Inject(ctx, rng)
		done <- result{t, err}
	}()
	timer := time.NewTimer(s.stuckAfter())
	defer timer.Stop()
	select {
	case r := <-done:
		return r.target, true, r.err
	case <-timer.C:
		return "", false, nil
	}
}

// between returns a duration drawn uniformly from [lo, hi].
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// RestartMemberFault restarts a random member, leader or follower, down
// for a duration drawn from [minDown, maxDown]. Its target is "m<i>
// (leader|follower) <down>".
func (f *Faults) RestartMemberFault(minDown, maxDown time.Duration) Fault {
	return Fault{Name: "restart-member", Inject: func(ctx context.Context, rng *rand.Rand) (string, error) {
		i := rng.IntN(len(f.c.Members()))
		down := between(rng, minDown, maxDown)
		role := "follower"
		if lead, err := f.c.WaitLeader(ctx); err == nil && lead == i {
			role = "leader"
		}
		return fmt.Sprintf("m%d (%s) down %v", i, role, down.Round(time.Millisecond)), f.RestartMember(ctx, i, down)
	}}
}

// PartitionLeaderFault isolates the leader for a duration drawn from
// [minD, maxD].
func (f *Faults) PartitionLeaderFault(minD, maxD time.Duration) Fault {
	return Fault{Name: "partition-leader", Inject: func(ctx context.Context, rng *rand.Rand) (string, error) {
		d := between(rng, minD, maxD)
		lead, err := f.PartitionLeader(ctx, d)
		return fmt.Sprintf("m%d for %v", lead, d.Round(time.Millisecond)), err
	}}
}

// MoveLeaderFault moves leadership to the next member.
func (f *Faults) MoveLeaderFault() Fault {
	return Fault{Name: "move-leader", Inject: func(ctx context.Context, _ *rand.Rand) (string, error) {
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		to, err := f.MoveLeader(mctx)
		return fmt.Sprintf("to m%d", to), err
	}}
}

// PauseMemberFault pauses the raft traffic of a random member for a
// duration drawn from [minD, maxD].
func (f *Faults) PauseMemberFault(minD, maxD time.Duration) Fault {
	return Fault{Name: "pause-member", Inject: func(ctx context.Context, rng *rand.Rand) (string, error) {
		i := rng.IntN(len(f.c.Members()))
		d := between(rng, minD, maxD)
		return fmt.Sprintf("m%d for %v", i, d.Round(time.Millisecond)), f.PauseMember(ctx, i, d)
	}}
}

// ClientFault applies fn (such as [PauseClient] or [BlackholeClient]) to
// the proxies of a client picked at random from clients, for a duration
// drawn from [minD, maxD]. Its target is the client's index and the
// duration.
func ClientFault(name string, clients [][]*Proxy, minD, maxD time.Duration,
	fn func(ctx context.Context, d time.Duration, ps ...*Proxy) error) Fault {
	return Fault{Name: name, Inject: func(ctx context.Context, rng *rand.Rand) (string, error) {
		if len(clients) == 0 {
			return "", errors.New("integration: no clients")
		}
		i := rng.IntN(len(clients))
		d := between(rng, minD, maxD)
		return fmt.Sprintf("client %d for %v", i, d.Round(time.Millisecond)), fn(ctx, d, clients[i]...)
	}}
}
