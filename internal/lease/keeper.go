// Package lease keeps a conservative, local view of whether an etcd lease is
// still alive.
//
// etcd's client measures a lease's deadline from the time a keep-alive
// response is received and checks it on a timer, so it learns of expiry late:
// the server may already have expired the lease and granted its locks to
// someone else. A Keeper instead renews the lease itself every TTL/3, one
// request at a time over a keep-alive stream of its own (see renewStream),
// and measures the deadline from the time each renewal was sent:
//
//	deadline = send time of the last acknowledged renewal + granted TTL - margin
//
// The server renewed the lease no earlier than the request was sent, so it
// cannot expire the lease before send + TTL (clock rates being equal), as
// long as etcd keeps the leases it acknowledged: a deposed leader can
// answer renewals the new one never sees, or have leases the new one just
// renewed revoked (etcd-io/etcd#15247); a hold then learns at its key's
// delete or at the next renewal. When
// the deadline passes without a newer renewal, the current Epoch ends with
// ErrDeadline ("jeopardy"); holds taken in that epoch must be treated as lost
// even though the lease may still be alive.
package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/internal/config"
)

var (
	// ErrExpired means the lease is gone at the server: it expired or was
	// revoked, or the session that owns it ended.
	ErrExpired = errors.New("session expired")
	// ErrDeadline means no renewal was acknowledged in time: the lease may
	// have expired at the server.
	ErrDeadline = errors.New("lease renewal deadline passed")
)

// Config describes a lease to keep.
type Config struct {
	// TTL is the granted TTL, if known (a lease this process granted).
	TTL time.Duration
	// Sent is when the Grant that returned TTL was sent. With TTL it gives
	// the first deadline without a probe.
	Sent time.Time
	// Margin is subtracted from every deadline. Zero means TTL/5.
	Margin time.Duration
	// SessionDone, if set, is a session's Done channel: when it closes, the
	// keeper stops renewing and reports ErrExpired.
	SessionDone <-chan struct{}
	// Logger is used at state changes only. Nil means no logging.
	Logger *zap.Logger
}

// Epoch is a span of time in which the lease was known to be alive. It ends
// when the conservative deadline passes or the lease is gone, and a later
// renewal starts a new Epoch. A hold belongs to the epoch in which it was
// granted.
type Epoch struct {
	ctx    context.Context // cancelled, with the reason as cause, when the epoch ends
	cancel context.CancelCauseFunc
}

func newEpoch() *Epoch {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Epoch{ctx: ctx, cancel: cancel}
}

func (e *Epoch) end(err error) { e.cancel(err) }

// Done is closed when the epoch ends.
func (e *Epoch) Done() <-chan struct{} { return e.ctx.Done() }

// Context is cancelled when the epoch ends.
func (e *Epoch) Context() context.Context { return e.ctx }

// Err returns ErrDeadline or ErrExpired once Done is closed, and nil before.
func (e *Epoch) Err() error {
	if e.ctx.Err() == nil {
		return nil
	}
	return context.Cause(e.ctx)
}

// Keeper renews one lease and tracks its conservative deadline, and deletes
// the keys on the lease that their owners handed over (Orphan). A Keeper is
// safe for concurrent use. It owns its goroutines (its loop, and the
// renewal and the sweep of orphans that the loop starts, one of each at a
// time) and its keep-alive stream, all ended by Stop, which waits for them.
type Keeper struct {
	cli    *clientv3.Client
	id     clientv3.LeaseID
	cfg    Config
	lg     *zap.Logger
	kick   chan struct{}
	sweep  chan struct{} // asks the loop to delete orphans now
	cancel context.CancelFunc
	done   chan struct{}
	probes sync.WaitGroup // probe and sweep goroutines, which may outlive their result
	stream renewStream    // used by one probe at a time
	// sweepMu serializes deletes of orphans: a sweep's, a renewal's and
	// the last one at Stop.
	sweepMu sync.Mutex

	mu        sync.Mutex
	ttl       time.Duration
	deadline  time.Time
	acked     time.Time // the send time of the last acknowledged renewal
	epoch     *Epoch
	gone      error
	badMargin error               // the configured margin does not fit the granted TTL
	orphans   map[orphan]orphaned // keys on this lease to delete
	goneC     chan struct{}       // closed when gone is set
	changed   chan struct{}       // closed and replaced at every state change

	obs renewObservers // see OnRenew
}

// Start starts keeping lease id alive. Stop must be called to release it.
func Start(cli *clientv3.Client, id clientv3.LeaseID, cfg Config) *Keeper {
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Keeper{
		cli:     cli,
		id:      id,
		cfg:     cfg,
		lg:      lg.With(zap.String("lease", leaseHex(id))),
		kick:    make(chan struct{}, 1),
		sweep:   make(chan struct{}, 1),
		cancel:  cancel,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		goneC:   make(chan struct{}),
		epoch:   newEpoch(),
	}
	if cfg.TTL > 0 && !cfg.Sent.IsZero() {
		k.ttl = cfg.TTL
		k.deadline = cfg.Sent.Add(cfg.TTL - k.margin(cfg.TTL))
	} else {
		k.epoch.end(ErrDeadline) // no deadline known yet: the first probe opens an epoch
	}
	k.stream = renewStream{cli: cli, ctx: ctx, lg: k.lg}
	go k.run(ctx)
	return k
}

func leaseHex(id clientv3.LeaseID) string {
	const hex = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = hex[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

func (k *Keeper) margin(ttl time.Duration) time.Duration {
	if k.cfg.Margin > 0 {
		return k.cfg.Margin
	}
	return ttl / 5
}

// ID returns the lease ID.
func (k *Keeper) ID() clientv3.LeaseID { return k.id }

// Stop stops renewing and waits for the keeper's goroutine to exit. It does
// not revoke the lease. Stop is idempotent.
func (k *Keeper) Stop() {
	k.cancel()
	<-k.done
}

// Gone returns ErrExpired once the lease is known to be gone, else nil.
func (k *Keeper) Gone() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gone
}

// Deadline returns the current conservative deadline and the granted TTL.
// Both are zero before the first renewal of a lease this process did not
// grant.
func (k *Keeper) Deadline() (time.Time, time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.deadline, k.ttl
}

// Current returns the open epoch. If none is open it asks for an immediate
// renewal and waits for it, until ctx ends (ctx's error is returned) or the
// lease is gone (ErrExpired).
func (k *Keeper) Current(ctx context.Context) (*Epoch, error) {
	for {
		k.mu.Lock()
		e, gone, changed, bad := k.epoch, k.gone, k.changed, k.badMargin
		open := e.Err() == nil && time.Now().Before(k.deadline)
		k.mu.Unlock()
		if gone != nil {
			return nil, gone
		}
		if bad != nil {
			return nil, bad
		}
		if open {
			return e, nil
		}
		k.Check()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// NotFound tells the keeper that etcd refused a request on the lease as
// not found: the lease is gone (revoked, or expired), which the keeper
// would otherwise learn only at its next renewal. It does not block.
func (k *Keeper) NotFound() { k.setGone() }

// AckedSince reports whether etcd acknowledged a renewal of the lease
// that was sent after t: the lease was alive after t.
func (k *Keeper) AckedSince(t time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.acked.After(t)
}

// GoneCh returns a channel closed when the lease is known to be gone.
func (k *Keeper) GoneCh() <-chan struct{} { return k.goneC }

type probeResult struct {
	sent time.Time
	ttl  time.Duration
	err  error
}

func (k *Keeper) run(ctx context.Context) {
	defer close(k.done)
	defer k.stream.close() // once no probe uses it
	defer k.probes.Wait()  // each ends soon once ctx is cancelled
	var (
		probeT    = time.NewTimer(0)
		deadlineT = time.NewTimer(time.Hour)
		inflight  chan probeResult
		// again is set by a Check made while a probe is in flight: that
		// probe was sent before the caller's sign, so its answer does not
		// answer the Check, and another probe follows it.
		again bool
		// sweeping is closed when the sweep in flight ends; resweep is
		// set by a request for a sweep made meanwhile.
		sweeping <-chan struct{}
		resweep  bool
	)
	defer probeT.Stop()
	defer deadlineT.Stop()
	deadlineT.Stop()
	k.mu.Lock()
	if k.ttl > 0 {
		probeT.Reset(time.Until(k.cfg.Sent.Add(k.ttl / 3)))
		deadlineT.Reset(time.Until(k.deadline))
	}
	k.mu.Unlock()

	probe := func() {
		if inflight != nil {
			return
		}
		ch := make(chan probeResult, 1)
		inflight = ch
		k.probes.Add(1)
		// One probe at a time, given up after a TTL. Not sooner: a slow
		// answer is still a renewal that moves the deadline (timed from the
		// send), and one given up on is lost, so a shorter timeout turns a
		// slow network into spurious losses. A probe stuck on a dead
		// connection is cut short by gRPC's keep-alive, which fails every
		// request on the connection, not by this timeout; a second probe on
		// the same connection would be stuck alike.
		timeout := 5 * time.Second
		if _, ttl := k.Deadline(); ttl > 0 {
			timeout = ttl
		}
		go func() {
			defer k.probes.Done()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			// One keep-alive request, on the stream kept from the last
			// renewal: as KeepAliveOnce's, but without a stream (and,
			// with password auth, a login) per renewal.
			sent, ttl, err := k.stream.renew(pctx, k.id)
			if err == nil && ttl <= 0 {
				err = rpctypes.ErrLeaseNotFound
			}
			r := probeResult{sent: sent, err: err}
			if err == nil {
				r.ttl = time.Duration(ttl) * time.Second
				if plantedBugs && planted(receiveTimeDeadline) {
					r.sent = time.Now() // planted bug: the stock client's receive time
				}
			}
			ch <- r // first the renewal's result, so orphans never delay it
			if err == nil {
				k.deleteOrphans(pctx)
			}
		}()
	}
	// sweepNow deletes the orphans at once, in a goroutine of the loop's,
	// on a context bounded by RevokeTimeout; those it cannot delete stay
	// for the renewals (one sweep at a time).
	sweepNow := func() {
		if sweeping != nil {
			resweep = true
			return
		}
		ch := make(chan struct{})
		sweeping = ch
		k.probes.Add(1)
		go func() {
			defer k.probes.Done()
			defer close(ch)
			sctx, cancel := context.WithTimeout(ctx, RevokeTimeout)
			defer cancel()
			k.deleteOrphans(sctx)
		}()
	}
	for {
		select {
		case <-ctx.Done():
			if inflight != nil {
				<-inflight
			}
			k.flushOrphans()
			return
		case <-k.cfg.SessionDone:
			k.setGone()
			if inflight != nil {
				<-inflight
			}
			return
		case <-k.sweep:
			sweepNow()
		case <-sweeping:
			sweeping = nil
			if resweep {
				resweep = false
				sweepNow()
			}
		case <-k.kick:
			if inflight != nil {
				again = true
				break
			}
			probe()
		case <-probeT.C:
			probe()
		case <-deadlineT.C:
			k.jeopardy()
		case r := <-inflight:
			inflight = nil
			checked := again
			again = false // a failed probe is retried anyway, after a pause
			switch {
			case r.err == nil:
				k.obs.renewed(k) // before the deadline moves
				d := k.renewed(r.sent, r.ttl)
				deadlineT.Reset(time.Until(d))
				probeT.Reset(time.Until(r.sent.Add(r.ttl / 3)))
				if checked {
					probe()
				}
			case errors.Is(r.err, rpctypes.ErrLeaseNotFound):
				k.setGone()
				return
			case ctx.Err() != nil: // Stop cut the probe short
				k.flushOrphans()
				return
			default:
				_, ttl := k.Deadline()
				retry := min(max(ttl/10, 50*time.Millisecond), time.Second)
				probeT.Reset(retry)
			}
		}
	}
}

func (k *Keeper) notify() {
	close(k.changed)
	k.changed = make(chan struct{})
}

func (k *Keeper) renewed(sent time.Time, ttl time.Duration) time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cfg.Margin > 0 && 2*k.cfg.Margin >= ttl && k.badMargin == nil {
		k.badMargin = fmt.Errorf("%w: safety margin %v is not less than half the lease's TTL %v", config.ErrInvalidOption, k.cfg.Margin, ttl)
	}
	d := sent.Add(ttl - k.margin(ttl))
	if d.After(k.deadline) {
		k.deadline = d
	}
	if sent.After(k.acked) {
		k.acked = sent
	}
	k.ttl = ttl
	if k.epoch.Err() != nil && time.Now().Before(k.deadline) {
		k.epoch = newEpoch()
		k.lg.Info("lease renewed after its deadline had passed")
	}
	k.notify()
	return k.deadline
}

func (k *Keeper) jeopardy() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Now().Before(k.deadline) || k.epoch.Err() != nil {
		return
	}
	k.epoch.end(ErrDeadline)
	k.lg.Warn("lease renewal deadline passed; holds on this lease are lost", zap.Time("deadline", k.deadline))
	k.notify()
}

func (k *Keeper) setGone() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gone != nil {
		return
	}
	k.gone = ErrExpired
	close(k.goneC)
	if k.epoch.Err() == nil {
		k.epoch.end(ErrExpired)
	}
	k.lg.Warn("lease is gone")
	k.notify()
}

// Check has the keeper renew the lease now, without waiting for its next
// renewal: a caller has seen a sign the lease may be gone. The renewal is
// sent after the call (after the one in flight, if any). It does not
// block.
func (k *Keeper) Check() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// unknownPutWindow bounds how long after a failed request its put may still
// land: etcd gives up on a proposal after its request timeout (5 s by
// default), and one already in a leader's log may be committed by the next
// leader after an election (about a second by default).
const unknownPutWindow = 15 * time.Second

// orphan is a key to delete if its create revision is still rev; with rev
// 0, if it is on this lease. Keyed by both, an older hold's failed cleanup
// never displaces a newer one's of the same (reused) name.
type orphan struct {
	key string
	rev int64
}

// orphaned is when a key was handed over, and what to call once it is
// deleted.
type orphaned struct {
	since   time.Time
	deleted func()
	with    []clientv3.Op // more ops for the delete's Txn (OrphanWith)
}

// Orphan hands the keeper a key on its lease that its owner could not
// delete, or gave up deleting. Left alone it would stay as long as the
// lease lives and block its queue. The keeper deletes it (if its create
// revision is still rev) at once, in the background, and after each
// successful renewal until a delete succeeds. With rev 0 (the put's outcome
// is unknown and it may still land) it keeps trying for a TTL, and at
// least for unknownPutWindow. It does not block.
func (k *Keeper) Orphan(key string, rev int64) { k.OrphanThen(key, rev, nil) }

// OrphanThen is Orphan, and has the keeper call deleted, if not nil, once
// a delete of the key with create revision rev (not 0) has succeeded or
// found it gone. The keeper forgets the key without calling deleted when
// the lease is gone or the keeper stops.
func (k *Keeper) OrphanThen(key string, rev int64, deleted func()) {
	k.OrphanWith(key, rev, nil, deleted)
}

// OrphanWith is OrphanThen, and has the keeper send with, if not empty,
// in the Then branch of the key's delete: ops that must go with the key
// (a queue's bookkeeping of it). They cost no round trip of their own.
func (k *Keeper) OrphanWith(key string, rev int64, with []clientv3.Op, deleted func()) {
	k.mu.Lock()
	if k.orphans == nil {
		k.orphans = make(map[orphan]orphaned)
	}
	k.orphans[orphan{key, rev}] = orphaned{since: time.Now(), deleted: deleted, with: with}
	k.mu.Unlock()
	select {
	case k.sweep <- struct{}{}:
	default:
	}
}

func (k *Keeper) deleteOrphans(ctx context.Context) {
	if !k.pendingOrphans() {
		return
	}
	k.sweepMu.Lock()
	defer k.sweepMu.Unlock()
	k.mu.Lock()
	todo := make(map[orphan]orphaned, len(k.orphans))
	for o, v := range k.orphans {
		todo[o] = v
	}
	ttl := k.ttl
	k.mu.Unlock()
	for o, v := range todo {
		var cmp clientv3.Cmp
		if o.rev > 0 {
			cmp = clientv3.Compare(clientv3.CreateRevision(o.key), "=", o.rev)
		} else { // revision unknown: the key is only ever this lease's
			cmp = clientv3.Compare(clientv3.LeaseValue(o.key), "=", k.id)
		}
		resp, err := k.cli.Txn(ctx).If(cmp).Then(append([]clientv3.Op{clientv3.OpDelete(o.key)}, v.with...)...).Commit()
		if err != nil {
			return
		}
		if resp.Succeeded {
			k.lg.Info("deleted a key left by a failed cleanup", zap.String("key", o.key))
		}
		if o.rev > 0 || time.Since(v.since) > max(ttl, unknownPutWindow) {
			k.mu.Lock()
			if k.orphans[o].since == v.since {
				delete(k.orphans, o)
			}
			k.mu.Unlock()
			if o.rev > 0 && v.deleted != nil {
				v.deleted()
			}
		}
	}
}

// flushOrphans is the last try at Stop. Stopped with keys still to delete,
// a caller's session lives on and would keep them, blocking their queues,
// so try once more, on a bounded context.
func (k *Keeper) flushOrphans() {
	if !k.pendingOrphans() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), RevokeTimeout)
	defer cancel()
	k.deleteOrphans(ctx)
}

// pendingOrphans reports whether keys await deletion on a live lease.
func (k *Keeper) pendingOrphans() bool {
	if k.cli.Ctx().Err() != nil {
		return false // the client is closed: the keys go with the lease
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.orphans) > 0 && k.gone == nil
}
