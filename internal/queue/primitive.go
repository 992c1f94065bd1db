package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcdlock/etcdlock/internal/config"
	"github.com/etcdlock/etcdlock/internal/ctxerr"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/lease"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Primitive is what every public lock type is made of: a queue, a lease
// source, and the set of live holds, which Close releases. It is safe for
// concurrent use.
type Primitive struct {
	Q     Queue
	Src   *lease.Source
	Value string
	Cfg   *config.Config

	closeCtx context.Context
	closeFn  context.CancelFunc

	mu        sync.Mutex
	holds     map[*Hold]struct{}
	closed    bool
	closeDone chan struct{}  // closed when the first Close returns
	wg        sync.WaitGroup // one per live hold: its monitor goroutine, if any, and onEnd

	waits []*context.CancelCauseFunc // acquires in progress, cancelled by Close
}

// Watching says how a Primitive's waiters and holds learn of deletes.
// There is one way now (see the package doc); the type stays so that
// callers of NewPrimitive need not change.
type Watching int

const (
	// KeyWatches: each waiter watches its own key and its blockers (the
	// nearest keys ahead that keep it out: no herd), and each hold its key.
	KeyWatches Watching = iota
	// SharedWatch is KeyWatches. It once meant one watch on the whole
	// prefix per Primitive, which sent every release to every client.
	SharedWatch = KeyWatches
)

// NewPrimitive validates the options and builds a Primitive of kind (see
// package keys) named name, whose waiters are admitted by rule. rule may
// be nil for a Primitive whose acquires all go through copies of Q with
// rules of their own (a read-write lock's readers and writers). Its
// errors, from here on, are pub's (see Public).
func NewPrimitive(cli *clientv3.Client, kind, name string, rule Rule, watching Watching, opts []config.Option, pub *Public) (*Primitive, error) {
	cfg, err := config.Build(cli, name, opts)
	if err != nil {
		return nil, pub.Err(err)
	}
	lg := cfg.Logger
	if lg.Core().Enabled(zapcore.FatalLevel) { // not a no-op logger: name the primitive
		lg = lg.With(zap.String(kind, name))
	}
	ctx, cancel := context.WithCancel(context.Background())
	prefix := keys.Prefix(cfg.Namespace, kind, name)
	_ = watching // one way of watching (see Watching)
	kw := newKeyWatches(ctx, cli, lg)
	return &Primitive{
		Q:        Queue{Client: cli, Prefix: prefix, Namespace: cfg.Namespace, Rule: rule, Logger: lg, Slots: &Slots{}, kw: kw, idle: new(atomic.Bool), delays: &holdDelays, pub: pub, met: newMeter(cfg, kind, name)},
		Src:      lease.NewSource(cli, cfg.Session, cfg.TTL, cfg.Margin, lg),
		Value:    cfg.Value,
		Cfg:      cfg,
		closeCtx: ctx,
		closeFn:  cancel,
		holds:    make(map[*Hold]struct{}),
	}, nil
}

// Acquire acquires a hold through q, the Primitive's Q or a copy of it
// (see Queue.Acquire), on the Primitive's lease. After Close it returns
// ErrClosed, and Close makes waits in progress return ErrClosed.
func (p *Primitive) Acquire(ctx context.Context, q *Queue, req Request) (*Hold, error) {
	var start time.Time
	if q.met != nil {
		start = time.Now()
	}
	h, err := p.acquire(ctx, q, req)
	if q.met != nil {
		q.met.acquired(ctx, start, h, err)
	}
	return h, q.pub.Err(err)
}

func (p *Primitive) acquire(ctx context.Context, q *Queue, req Request) (*Hold, error) {
	if req.Value == "" {
		req.Value = p.Value
	}
	// Read before any state changes: a nil ctx panics here, leaving the
	// Primitive as it was.
	ended := context.Cause(ctx)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if q.Client.Ctx().Err() != nil {
		p.mu.Unlock()
		return nil, ErrClientClosed
	}
	if ended != nil { // grant no lease and enqueue nothing
		p.mu.Unlock()
		return nil, ended
	}
	p.wg.Add(1) // for the hold, done when it ends (onEnd), or undone below
	// Close cancels the wait with ErrClosed. A list, not an AfterFunc on
	// closeCtx: that would leave closeCtx a map of children for good.
	wc := &cancel
	p.waits = append(p.waits, wc)
	p.mu.Unlock()
	defer p.unwait(wc)

	h, err := p.acquireOnLease(ctx, q, req, func(h *Hold) {
		p.mu.Lock()
		delete(p.holds, h)
		p.mu.Unlock()
		p.wg.Done()
	})
	if err != nil {
		p.wg.Done()
		if cause := ctxerr.Ended(ctx); cause != nil {
			// A request cut short by ctx reports a bare context error, or
			// etcd's timeout; say why ctx ended (the caller's cause, or
			// ErrClosed).
			return nil, cause
		}
		return nil, clientClosed(q, err)
	}
	p.mu.Lock()
	if p.closed { // Close ran while the grant was on its way
		p.mu.Unlock()
		rctx, rcancel := context.WithTimeout(context.Background(), CleanupTimeout)
		defer rcancel()
		h.silence()
		_ = h.Release(rctx)
		return nil, ErrClosed
	}
	if h.Err() == nil {
		p.holds[h] = struct{}{}
	}
	p.mu.Unlock()
	return h, nil
}

// acquireOnLease acquires through q on the Source's lease. A lease found
// gone before the waiter's key was put (revoked while the Primitive was
// idle) cost the caller nothing but that round trip: the Source grants
// its own leases anew, so the acquire is tried once more, on a new lease
// (a caller's session does not come back: Get then fails).
func (p *Primitive) acquireOnLease(ctx context.Context, q *Queue, req Request, onEnd func(*Hold)) (*Hold, error) {
	for retried := false; ; retried = true {
		k, err := p.Src.Get(ctx)
		if err != nil {
			return nil, err
		}
		q.met.watchLease(k)
		h, err := q.Acquire(ctx, k, req, onEnd)
		if retried || !errors.Is(err, errGoneEarly) {
			return h, err
		}
	}
}

// Close makes later acquires fail with ErrClosed, ends waits in progress,
// releases every live hold (together, on one bounded context), waits for
// their goroutines, and revokes the lease if the primitive granted it. A
// caller's session is left open. Close is idempotent: a Close called while
// another runs waits for it and returns nil.
func (p *Primitive) Close() error {
	p.mu.Lock()
	if p.closed {
		done := p.closeDone
		p.mu.Unlock()
		<-done
		return nil
	}
	p.closed = true
	p.closeDone = make(chan struct{})
	defer close(p.closeDone)
	holds := make([]*Hold, 0, len(p.holds))
	for h := range p.holds {
		holds = append(holds, h)
	}
	waits := p.waits
	p.waits = nil
	p.mu.Unlock()
	p.closeFn()
	for _, c := range waits {
		(*c)(ErrClosed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
	errs := make([]error, len(holds))
	var rel sync.WaitGroup
	for i, h := range holds {
		rel.Go(func() {
			if err := h.Release(ctx); err != nil && !errors.Is(err, ErrNotHeld) {
				errs[i] = err
			}
		})
	}
	rel.Wait()
	cancel()
	p.wg.Wait()
	p.Q.kw.close()
	p.Q.met.stop()
	errs = append(errs, p.Src.Close())
	return p.Q.pub.Err(errors.Join(errs...))
}

// unwait removes an acquire's cancel from p.waits.
func (p *Primitive) unwait(wc *context.CancelCauseFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.waits {
		if x == wc {
			last := len(p.waits) - 1
			p.waits[i], p.waits[last] = p.waits[last], nil
			p.waits = p.waits[:last]
			break
		}
	}
	if len(p.waits) == 0 {
		p.waits = nil
	}
}

// CloseContext returns a context cancelled when Close is called, for
// background work the primitive's owner starts.
func (p *Primitive) CloseContext() context.Context { return p.closeCtx }

// clientClosed returns ErrClientClosed in place of err when q's client is
// closed: clientv3 then fails requests with context.Canceled, which would
// read as the caller's own context ending.
func clientClosed(q *Queue, err error) error {
	if q.Client.Ctx().Err() != nil {
		return ErrClientClosed
	}
	return err
}

// Holding reports whether a hold acquired through p is live: granted, not
// released, not known to be lost. No I/O.
func (p *Primitive) Holding() bool {
	p.mu.Lock()
	holds := make([]*Hold, 0, len(p.holds))
	for h := range p.holds {
		holds = append(holds, h)
	}
	p.mu.Unlock()
	for _, h := range holds { // outside p.mu, which a hold's end takes
		if h.Err() == nil {
			return true
		}
	}
	return false
}
