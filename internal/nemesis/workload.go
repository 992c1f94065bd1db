package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration/embedded"
	"github.com/etcdlock/etcdlock/lock"
)

// Workload names, the values of Config.Workloads.
const (
	// WorkloadMutexExt: Mutex holders read-modify-write a counter in a
	// register outside etcd fenced by fencing.Fence (reads and writes).
	WorkloadMutexExt = "mutex-ext"
	// WorkloadMutexEtcd: the same with the register in etcd, every read and
	// write a transaction guarded by the hold's key (Token.Cmp).
	WorkloadMutexEtcd = "mutex-etcd"
	// WorkloadControl: mutex-ext without fencing, the control that must
	// lose updates when a holder pauses past its lease.
	WorkloadControl = "mutex-control"
	// WorkloadRWMutex: RWMutex writers read-modify-write and readers read
	// a register outside etcd fenced by fencing.RWFence.
	WorkloadRWMutex = "rwmutex"
	// WorkloadSemaphore: holders of a Semaphore of 3 permits (one worker
	// takes 2) increment a counter in etcd with a compare-and-swap guarded
	// by the hold's key.
	WorkloadSemaphore = "semaphore"
	// WorkloadElection: leaders read-modify-write a register in etcd
	// guarded by the term's key and Proclaim between writes; an observer
	// records what Observe reports.
	WorkloadElection = "election"
	// WorkloadSQL: Mutex holders read-modify-write a counter row in a
	// SQLite database, each read and each write a transaction that
	// sqlfence's Admit opens with the hold's token.
	WorkloadSQL = "mutex-sql"
	// WorkloadSQLControl: mutex-sql without Admit, the control that must
	// lose updates when a holder pauses past its lease.
	WorkloadSQLControl = "mutex-sql-control"
	// WorkloadLockDelay: mutex-ext with lock.WithLockDelay, whose workers
	// pause up to three TTLs after every other release, so that a paused
	// holder's lease also expires with nobody waiting; checker (1) also
	// checks that no grant came within the delay of an unclean loss (see
	// checkLockDelay).
	WorkloadLockDelay = "mutex-lockdelay"
)

// AllWorkloads lists every workload, in table order.
var AllWorkloads = []string{WorkloadMutexExt, WorkloadMutexEtcd, WorkloadControl, WorkloadRWMutex, WorkloadSemaphore, WorkloadElection,
	WorkloadSQL, WorkloadSQLControl, WorkloadLockDelay}

// isControl reports whether workload is an unfenced control, whose lost
// updates and non-linearizable history are expected, not violations.
func isControl(workload string) bool {
	return workload == WorkloadControl || workload == WorkloadSQLControl
}

// isSQL reports whether workload keeps its register in the run's SQLite
// database.
func isSQL(workload string) bool { return workload == WorkloadSQL || workload == WorkloadSQLControl }

// Timeouts of the workers' requests.
const (
	acquireTimeout = 5 * time.Second
	opTimeout      = time.Second
	unlockAttempts = 3
	semLimit       = 3
)

// holdLike is a *lock.Hold or an *election.Term.
type holdLike interface {
	Token() fencing.Token
	Context() context.Context
	release(ctx context.Context) error
	lease() int64
}

type lockHold struct{ *lock.Hold }

func (h lockHold) release(ctx context.Context) error { return h.Unlock(ctx) }
func (h lockHold) lease() int64                      { return int64(h.Lease()) }

type termHold struct{ *election.Term }

func (h termHold) release(ctx context.Context) error { return h.Resign(ctx) }
func (h termHold) lease() int64                      { return 0 } // taken from the key

// settled reports whether a release error is final (no point retrying).
func settled(err error) bool {
	return err == nil || errors.Is(err, lock.ErrNotHeld) || errors.Is(err, election.ErrNotLeader)
}

// register is a counter outside etcd, fenced by a high-water mark (or not
// at all, for the control). Each access is admitted and done atomically.
type register struct {
	mu    sync.Mutex
	mode  registerMode
	value int64
	fence fencing.Fence
	rw    fencing.RWFence
}

type registerMode int

const (
	unfenced registerMode = iota
	fenceMutex
	fenceRW
)

func (r *register) access(tok fencing.Token, write, writer bool, v int64) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	switch {
	case r.mode == fenceMutex:
		err = r.fence.Admit("r", tok)
	case r.mode == fenceRW && writer:
		err = r.rw.AdmitWrite("r", tok)
	case r.mode == fenceRW:
		err = r.rw.AdmitRead("r", tok)
	}
	if err != nil {
		return 0, err
	}
	if write {
		r.value = v
	}
	return r.value, nil
}

type pauseRequest struct {
	d    time.Duration
	long bool        // d is at least 2 TTL: the holder's lease must expire
	done chan string // the worker that paused, when its pause ended
}

// workload is one workload of one phase: its workers, their clients and
// primitives, and its history.
type workload struct {
	name string
	env  *env
	ns   string // lock namespace
	data string // etcd key of the register, for the etcd kinds
	spec lockSpec
	hist *History
	reg  *register
	sql  *sqlRegister
	// fenced: stale accesses are refused; strict: by a high-water mark;
	// control: an unfenced control.
	fenced, strict, counter, control bool

	workers  []*worker
	pauseReq chan *pauseRequest
	cs       atomic.Int64 // critical sections completed
	stale    atomic.Int64 // accesses refused as stale
	// malformed counts transaction responses without the response of
	// their one operation, recorded as of unknown outcome (seen once, in
	// a mixed phase; a client blackhole, which drops bytes mid-stream, is
	// the likely cause).
	malformed atomic.Int64
	observer  *election.Election
	obsDone   chan struct{}

	wg sync.WaitGroup
}

type worker struct {
	wl      *workload
	name    string
	proxies []*embedded.Proxy
	cli     *clientv3.Client
	acquire func(context.Context) (holdLike, error)
	loop    func(context.Context) // if set, the worker's whole run (election.Run)
	close   func() error
	writer  bool
	weight  int64
	reader  bool // RWMutex reader: reads only
	leader  bool // election candidate
	client  int  // porcupine client id
	rng     *rand.Rand
	readRev int64 // mod revision of the etcd register at the last read
	// think, if set, bounds a random pause after every other release:
	// idle spells, in which a paused holder's lease can expire with
	// nobody waiting (mutex-lockdelay).
	think time.Duration
}

func (e *env) newWorkload(name, ns, data string) *workload {
	wl := &workload{name: name, env: e, ns: ns, data: data, hist: newHistory(e.start),
		pauseReq: make(chan *pauseRequest), counter: true}
	switch name {
	case WorkloadMutexExt, WorkloadLockDelay:
		wl.reg, wl.fenced, wl.strict = &register{mode: fenceMutex}, true, true
	case WorkloadControl:
		wl.reg, wl.strict = &register{mode: unfenced}, true
	case WorkloadSQL:
		wl.sql = &sqlRegister{db: e.sql.db, fence: e.sql.fence, name: ns}
		wl.fenced, wl.strict = true, true
	case WorkloadSQLControl:
		wl.sql = &sqlRegister{db: e.sql.db, name: ns}
		wl.strict = true
	case WorkloadRWMutex:
		wl.reg, wl.fenced, wl.strict = &register{mode: fenceRW}, true, true
		wl.spec.kind = readWrite
	case WorkloadMutexEtcd, WorkloadElection:
		wl.fenced = true
	case WorkloadSemaphore:
		wl.fenced = true
		wl.spec.kind, wl.spec.limit = semaphore, semLimit
	}
	wl.control = isControl(name)
	return wl
}

// newClient returns a client of every member, each through its own proxy.
func (e *env) newClient() (*clientv3.Client, []*embedded.Proxy, error) {
	var ps []*embedded.Proxy
	closeAll := func() {
		for _, p := range ps {
			_ = p.Close()
		}
	}
	for _, m := range e.cluster.Members() {
		p, err := embedded.StartProxy(m.Endpoint())
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		ps = append(ps, p)
	}
	eps := make([]string, len(ps))
	for i, p := range ps {
		eps[i] = p.Endpoint()
	}
	cli, err := e.cluster.NewClient(func(c *clientv3.Config) {
		c.Endpoints = eps
		c.DialTimeout = 2 * time.Second
	})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return cli, ps, nil
}

// start creates the workers and starts them; they run until ctx ends.
func (wl *workload) start(ctx context.Context, seed uint64) error {
	e := wl.env
	n := 3
	switch wl.name {
	case WorkloadRWMutex:
		n = 4
	case WorkloadSemaphore:
		n = 5
	}
	if wl.data != "" {
		if _, err := e.direct.Put(ctx, wl.data, "0"); err != nil {
			return err
		}
	}
	if wl.sql != nil {
		if err := wl.sql.create(ctx); err != nil {
			return fmt.Errorf("creating the counter row: %w", err)
		}
	}
	for i := range n {
		cli, ps, err := e.newClient()
		if err != nil {
			return err
		}
		w := &worker{wl: wl, name: fmt.Sprintf("w%d", i), cli: cli, proxies: ps, writer: true, weight: 1,
			client: wl.hist.clientID(), rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		wl.workers = append(wl.workers, w)
		lopts := []lock.Option{lock.WithNamespace(wl.ns), lock.WithTTL(e.cfg.TTL), lock.WithHolder(w.name)}
		switch wl.name {
		case WorkloadMutexExt, WorkloadMutexEtcd, WorkloadControl, WorkloadSQL, WorkloadSQLControl, WorkloadLockDelay:
			if wl.name == WorkloadLockDelay {
				lopts = append(lopts, lock.WithLockDelay(lockDelayOf(e.cfg)))
				w.think = 3 * e.cfg.TTL
			}
			m, err := lock.NewMutex(cli, "x", lopts...)
			if err != nil {
				return err
			}
			wl.spec.prefix = m.Prefix()
			w.acquire = func(ctx context.Context) (holdLike, error) { return wrapLock(m.Lock(ctx)) }
			w.close = m.Close
		case WorkloadRWMutex:
			m, err := lock.NewRWMutex(cli, "x", lopts...)
			if err != nil {
				return err
			}
			wl.spec.prefix = m.Prefix()
			w.reader = i%2 == 1
			w.writer = !w.reader
			if w.reader {
				w.acquire = func(ctx context.Context) (holdLike, error) { return wrapLock(m.RLock(ctx)) }
			} else {
				w.acquire = func(ctx context.Context) (holdLike, error) { return wrapLock(m.Lock(ctx)) }
			}
			w.close = m.Close
		case WorkloadSemaphore:
			s, err := lock.NewSemaphore(cli, "x", semLimit, lopts...)
			if err != nil {
				return err
			}
			wl.spec.prefix = s.Prefix()
			if i == n-1 {
				w.weight = 2
			}
			k := w.weight
			w.acquire = func(ctx context.Context) (holdLike, error) { return wrapLock(s.Acquire(ctx, k)) }
			w.close = s.Close
		case WorkloadElection:
			el, err := election.New(cli, "x", election.WithNamespace(wl.ns), election.WithTTL(e.cfg.TTL))
			if err != nil {
				return err
			}
			wl.spec.prefix = el.Prefix()
			w.leader = true
			w.acquire = func(ctx context.Context) (holdLike, error) {
				t, err := el.Campaign(ctx, w.name)
				if err != nil {
					return nil, err
				}
				return termHold{t}, nil
			}
			if i == n-1 {
				// One candidate leads through election.Run, which resigns
				// once the work has returned.
				w.loop = func(ctx context.Context) {
					_ = el.Run(ctx, w.name, election.Callbacks{Lead: func(lctx context.Context, term *election.Term) error {
						return w.lead(ctx, lctx, term)
					}})
				}
			}
			w.close = el.Close
		default:
			return fmt.Errorf("nemesis: unknown workload %q", wl.name)
		}
	}
	if wl.name == WorkloadElection {
		obs, err := election.New(e.direct, "x", election.WithNamespace(wl.ns), election.WithTTL(e.cfg.TTL))
		if err != nil {
			return err
		}
		wl.observer = obs
		wl.obsDone = make(chan struct{})
		ch := obs.Observe(ctx)
		go func() {
			defer close(wl.obsDone)
			for l := range ch {
				wl.hist.addObservation(Observation{Key: l.Token.Key, Token: l.Token.Revision, Value: l.Value, At: wl.hist.now()})
			}
		}()
	}
	for _, w := range wl.workers {
		wl.wg.Go(func() { w.run(ctx) })
	}
	return nil
}

func wrapLock(h *lock.Hold, err error) (holdLike, error) {
	if err != nil {
		return nil, err
	}
	return lockHold{h}, nil
}

// stop waits for the workers (their context must have ended), then closes
// the primitives, clients and proxies.
func (wl *workload) stop() error {
	wl.wg.Wait()
	if wl.obsDone != nil {
		<-wl.obsDone
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	keep := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	for _, w := range wl.workers {
		wg.Go(func() {
			if w.close != nil {
				keep(w.close())
			}
			if err := w.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
				keep(err)
			}
			for _, p := range w.proxies {
				keep(p.Close())
			}
		})
	}
	wg.Wait()
	if wl.observer != nil {
		keep(wl.observer.Close())
	}
	return errors.Join(errs...)
}

// granted records a grant that the library reported to worker: its token,
// the revision of a linearizable read made right after (RPost), and when
// its Done channel closes.
func (e *env) granted(hist *History, worker string, h holdLike, invoke int64, weight int64, writer bool) *Grant {
	ret := hist.now()
	tok := h.Token()
	g := &Grant{Worker: worker, Key: tok.Key, Token: tok.Revision, Lease: h.lease(), Weight: weight, Writer: writer,
		Invoke: invoke, Return: ret}
	context.AfterFunc(h.Context(), func() {
		at := hist.now()
		if t, ok := LostAt(context.Cause(h.Context())); ok {
			at = int64(t.Sub(hist.start))
		}
		g.doneAt.Store(at)
		cause := causeName(context.Cause(h.Context()))
		g.doneCause.Store(&cause)
	})
	// Any later read's revision bounds the admission too, only less
	// tightly: retry, since a grant without RPost escapes checker (1)'s
	// "true when reported" test, and reads fail most under faults.
	for attempt := 0; attempt < 3 && g.RPost == 0; attempt++ {
		rctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		if resp, err := e.direct.Get(rctx, "\x00", clientv3.WithCountOnly()); err == nil {
			g.RPost = resp.Header.Revision
		}
		cancel()
	}
	hist.addGrant(g)
	return g
}

// causeName names why a hold ended.
func causeName(err error) string {
	switch {
	case errors.Is(err, lock.ErrDeadline), errors.Is(err, election.ErrDeadline):
		return causeDeadline
	case errors.Is(err, lock.ErrDeleted), errors.Is(err, election.ErrDeleted):
		return "deleted"
	case errors.Is(err, lock.ErrSessionExpired), errors.Is(err, election.ErrSessionExpired):
		return "expired"
	case errors.Is(err, lock.ErrReleased), errors.Is(err, election.ErrResigned):
		return "released"
	case err == nil:
		return ""
	}
	return err.Error()
}

const causeDeadline = "deadline"

// LostAt returns when the library found a hold (or term) lost, from err, a
// lost hold's cause: the time Done closed. A goroutine woken by Done may
// run much later on a loaded machine, and the checkers time the holder's
// notice against the watcher's.
func LostAt(err error) (time.Time, bool) {
	var le *lock.LostError
	if errors.As(err, &le) && !le.At.IsZero() {
		return le.At, true
	}
	var ee *election.LostError
	if errors.As(err, &ee) && !ee.At.IsZero() {
		return ee.At, true
	}
	return time.Time{}, false
}

// release unlocks (or resigns) h, retrying a few times on errors whose
// outcome is unknown; it records when the worker first asked.
func release(hist *History, h holdLike, g *Grant) error {
	if g.UnlockAt == 0 {
		g.UnlockAt = hist.now()
	}
	var err error
	for i := range unlockAttempts {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err = h.release(ctx)
		cancel()
		if settled(err) {
			break
		}
		if i+1 < unlockAttempts {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err != nil {
		g.UnlockErr = err.Error()
	}
	return err
}

func (w *worker) run(ctx context.Context) {
	wl := w.wl
	if w.loop != nil {
		w.loop(ctx)
		return
	}
	for ctx.Err() == nil {
		inv := wl.hist.now()
		actx, cancel := context.WithTimeout(ctx, acquireTimeout)
		h, err := w.acquire(actx)
		cancel()
		if err != nil {
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		g := wl.env.granted(wl.hist, w.name, h, inv, w.weight, w.writer)
		tok := h.Token()
		switch {
		case w.reader:
			if _, st := w.read(ctx, tok); st == OK {
				wl.cs.Add(1)
			}
		case w.leader:
			w.leaderSteps(ctx, ctx, h.(termHold).Term)
		default:
			w.rmw(ctx, tok)
		}
		_ = release(wl.hist, h, g)
		pause := time.Duration(1+w.rng.IntN(3)) * time.Millisecond
		if w.think > 0 && w.rng.IntN(2) == 0 {
			pause = time.Duration(w.rng.Int64N(int64(w.think)))
		}
		sleepCtx(ctx, pause)
	}
}

// lead is the work of a candidate that leads through election.Run: the
// same as a Campaign worker's, but it stops between steps once its context
// is cancelled, and Run resigns after it returns (its UnlockAt is the
// return). Its reads and writes use the worker's context, as a process
// paused mid-step would act on after its term ended: fencing must refuse
// them.
func (w *worker) lead(ctx, lctx context.Context, term *election.Term) error {
	wl := w.wl
	h := termHold{term}
	g := wl.env.granted(wl.hist, w.name, h, wl.hist.now(), w.weight, w.writer)
	w.leaderSteps(ctx, lctx, term)
	g.UnlockAt = wl.hist.now()
	return nil
}

// leaderSteps is a leader's work: three increments of the register, each
// followed by a Proclaim (on stop's context). It stops between steps once
// stop ends; the increments use ctx.
func (w *worker) leaderSteps(ctx, stop context.Context, term *election.Term) {
	tok := term.Token()
	for j := range 3 {
		if stop.Err() != nil {
			return
		}
		w.rmw(ctx, tok)
		pctx, cancel := context.WithTimeout(stop, opTimeout)
		_ = term.Proclaim(pctx, fmt.Sprintf("%s/%d/%d", w.name, tok.Revision, j))
		cancel()
	}
}

// rmw increments the register: read, (maybe pause), write read+1.
func (w *worker) rmw(ctx context.Context, tok fencing.Token) {
	for range 5 {
		v, st := w.read(ctx, tok)
		if st != OK {
			return
		}
		w.pausePoint(ctx)
		switch w.write(ctx, tok, v+1) {
		case OK:
			w.wl.cs.Add(1)
			return
		case conflict:
			continue // semaphore: another holder wrote in between
		default:
			return
		}
	}
}

// conflict is the outcome of a semaphore's compare-and-swap that lost to
// another current holder: not stale, not applied.
const conflict Outcome = "conflict"

// pausePoint is between a critical section's read and its write: a worker
// that finds a pause request here pauses its proxies and itself, like a
// process stopped in the middle of its work.
func (w *worker) pausePoint(ctx context.Context) {
	select {
	case req := <-w.wl.pauseReq:
		start := time.Now()
		_ = embedded.PauseClient(ctx, req.d, w.proxies...)
		// A pause the phase's end cut short, or shorter than 2 TTL, need
		// not let the lease expire.
		w.wl.hist.addPause(req.long && time.Since(start) >= req.d)
		req.done <- w.name
	default:
	}
}

func (w *worker) record(a Access) {
	a.Worker = w.name
	a.Client = w.client
	if a.Status == Unknown {
		a.Ret = never
		w.client = w.wl.hist.clientID() // go on as a new porcupine client
	}
	if a.Status == Rejected {
		w.wl.stale.Add(1)
	}
	if a.Status != conflict && a.Status != aborted {
		w.wl.hist.addAccess(a)
	}
}

// read reads the register under tok.
func (w *worker) read(ctx context.Context, tok fencing.Token) (int64, Outcome) {
	wl := w.wl
	a := Access{Writer: w.writer, Token: tok.Revision, Call: wl.hist.now()}
	if wl.reg != nil {
		v, err := wl.reg.access(tok, false, w.writer, 0)
		a.Ret = wl.hist.now()
		if err != nil {
			a.Status = Rejected
		} else {
			a.Status, a.Value = OK, v
		}
		w.record(a)
		return v, a.Status
	}
	if wl.sql != nil {
		a.Value, a.Status = wl.sql.access(ctx, tok, false, 0)
		a.Ret = wl.hist.now()
		w.record(a)
		return a.Value, a.Status
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	resp, err := w.cli.Txn(octx).If(tok.Cmp()).Then(clientv3.OpGet(wl.data)).Commit()
	cancel()
	a.Ret = wl.hist.now()
	switch {
	case err != nil:
		a.Status = Unknown
	case !resp.Succeeded:
		a.Status = Rejected
	case len(resp.Responses) != 1 || resp.Responses[0].GetResponseRange() == nil:
		a.Status = Unknown
		wl.malformed.Add(1)
	default:
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 {
			a.Value, _ = strconv.ParseInt(string(kvs[0].Value), 10, 64)
			w.readRev = kvs[0].ModRevision
		}
		a.Status = OK
	}
	w.record(a)
	return a.Value, a.Status
}

func (w *worker) write(ctx context.Context, tok fencing.Token, v int64) Outcome {
	wl := w.wl
	a := Access{Write: true, Writer: w.writer, Token: tok.Revision, Value: v, Call: wl.hist.now()}
	if wl.reg != nil {
		_, err := wl.reg.access(tok, true, w.writer, v)
		a.Ret = wl.hist.now()
		a.Status = OK
		if err != nil {
			a.Status = Rejected
		}
		w.record(a)
		return a.Status
	}
	if wl.sql != nil {
		_, a.Status = wl.sql.access(ctx, tok, true, v)
		a.Ret = wl.hist.now()
		w.record(a)
		return a.Status
	}
	cmps := []clientv3.Cmp{tok.Cmp()}
	if wl.spec.kind == semaphore {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(wl.data), "=", w.readRev))
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	resp, err := w.cli.Txn(octx).If(cmps...).Then(clientv3.OpPut(wl.data, strconv.FormatInt(v, 10))).
		Else(clientv3.OpGet(tok.Key, clientv3.WithKeysOnly())).Commit()
	cancel()
	a.Ret = wl.hist.now()
	switch {
	case err != nil:
		a.Status = Unknown
	case len(resp.Responses) != 1 || !resp.Succeeded && resp.Responses[0].GetResponseRange() == nil:
		a.Status = Unknown
		wl.malformed.Add(1)
	case resp.Succeeded:
		a.Status = OK
	default:
		a.Status = Rejected
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 && kvs[0].CreateRevision == tok.Revision {
			a.Status = conflict // still current: another holder's write came first
		}
	}
	w.record(a)
	return a.Status
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// between draws a duration uniformly from [lo, hi].
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

var errNoHolder = errors.New("no holder reached its critical section in time")

// pauseHolderFault pauses a holder of wl inside its critical section, with
// its proxies, for 0.5 to 3 TTL; the first pause of a schedule lasts at
// least 2 TTL, so that every schedule lets at least one lease expire under
// a live holder.
func (wl *workload) pauseHolderFault(ttl time.Duration) embedded.Fault {
	n := 0
	return embedded.Fault{Name: "pause-holder", Inject: func(ctx context.Context, rng *rand.Rand) (string, error) {
		lo := ttl / 2
		if n == 0 {
			lo = 2 * ttl
		}
		d := between(rng, lo, 3*ttl)
		req := &pauseRequest{d: d, long: d >= 2*ttl, done: make(chan string, 1)}
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case wl.pauseReq <- req:
		case <-t.C:
			return wl.name, errNoHolder
		case <-ctx.Done():
			return wl.name, ctx.Err()
		}
		n++
		who := <-req.done // the worker's pause ends by d or when the phase ends
		return fmt.Sprintf("%s/%s for %v", wl.name, who, d.Round(time.Millisecond)), nil
	}}
}

// blackholeFault drops the traffic of a random worker of wl for 0.5 to 3
// TTL; the worker itself goes on.
func (wl *workload) blackholeFault(ttl time.Duration) embedded.Fault {
	return embedded.Fault{Name: "blackhole-client", Inject: func(ctx context.Context, rng *rand.Rand) (string, error) {
		w := wl.workers[rng.IntN(len(wl.workers))]
		d := between(rng, ttl/2, 3*ttl)
		return fmt.Sprintf("%s/%s for %v", wl.name, w.name, d.Round(time.Millisecond)), embedded.BlackholeClient(ctx, d, w.proxies...)
	}}
}
