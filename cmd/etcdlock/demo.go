package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration/embedded"
	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/lock"
)

// demoCmd is "etcdlock demo".
var demoCmd = &command{
	name:    "demo",
	summary: "a paused lock holder is fenced off by the resource it protects",
	usage:   "etcdlock demo [flags]",
	help: `
Demo starts an embedded etcd server (no fsync) and 4 workers, w1 to w4, each
with its own client and its own lock.Mutex (TTL 2s) on one lock. Holding the
lock, a worker does a read-modify-write of a counter kept outside etcd, and
the counter admits the hold's fencing token for the read and again for the
write. By default the counter is a row in a SQLite database (in a temporary
directory, removed at the end), and each access is a transaction that
admits the token with sqlfence first: the database itself refuses a stale
token. With --store memory, the counter is an integer in memory behind a
fencing.Fence.

w1's client reaches etcd through a proxy. In its second critical section,
after its read, the demo pauses that proxy and w1 sleeps without looking at
its hold's Done channel, as a process stopped by a long GC pause would. etcd
expires w1's lease and another worker takes the lock with a higher token.
Then w1 resumes and writes with its old token: the database (or the fence)
rejects it (fencing.ErrStale) and nothing is written. The demo also shows
that w1's Done had closed: the lock did tell it, before etcd gave the lock
away.

Every event is printed with the time since the start. The last line sums up:

	demo: N critical sections, counter=N, 1 stale write rejected, 0 lost updates

The exit status is 1 if an invariant failed: the counter differs from the
number of accepted increments, the stale write was accepted, or no other
worker took over; and 1, with one line saying why, if the demo stopped
before its end: interrupted (SIGINT, SIGTERM), or its output could not be
written. The demo takes about 3 seconds.`,
	setup: setupDemo,
}

// Parameters of the demo.
const (
	demoWorkers   = 4                // workers contending for the lock
	demoTTL       = 2 * time.Second  // lease TTL of every worker's Mutex
	demoPauseIn   = 2                // the paused worker pauses in this critical section of its own
	demoAfter     = 3                // critical sections to complete after the paused worker is done
	demoMaxPause  = 15 * time.Second // bound on the pause: another worker must take over by then
	demoTimeout   = 60 * time.Second // bound on the whole demo
	demoNamespace = "etcdlock-demo/" // key prefix of the demo's lock
	demoLock      = "counter"        // name of the lock
	demoResource  = "counter"        // name of the fenced resource
	demoUnlockTTL = 5 * time.Second  // bound on each Unlock
)

// setupDemo defines demo's flags.
func setupDemo(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) int {
	logLocks := fs.Bool("log", false, "log the locks' state changes (acquired, lost, released) to stderr")
	store := fs.String("store", storeSQLite, "where the counter lives: "+storeSQLite+" (a SQLite database, fenced by sqlfence) or "+storeMemory+" (in memory, fenced by a fencing.Fence)")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		if *store != storeSQLite && *store != storeMemory {
			fmt.Fprintf(stderr, "etcdlock demo: --store %q: want %s or %s\n", *store, storeSQLite, storeMemory)
			return exitUsage
		}
		lg := zap.NewNop()
		if *logLocks {
			enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
			lg = zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), zapcore.DebugLevel))
		}
		// With SIGPIPE caught, a write to a closed pipe ("etcdlock demo |
		// head -1") fails with EPIPE, which stops the demo, instead of
		// killing the process before it has stopped its etcd and removed
		// its data.
		sigpipe := make(chan os.Signal, 1)
		signal.Notify(sigpipe, syscall.SIGPIPE)
		defer signal.Stop(sigpipe)
		return runDemo(ctx, lg, *store, stdout, stderr)
	}
}

// runDemo runs the demo, printing events to stdout and failures to stderr,
// and returns the exit status. An invariant that failed is reported as
// "FAILED"; a demo that could not run to its end (interrupted, or its
// events could not be written) says why in one line, and claims no failure
// of the invariants that only its end can check.
func runDemo(parent context.Context, lg *zap.Logger, store string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(parent, demoTimeout)
	defer cancel()
	ctx, stopWriting := context.WithCancelCause(ctx)
	defer stopWriting(nil)
	d := &demo{
		log:      &eventLog{w: stdout, start: time.Now(), failed: stopWriting},
		lg:       lg,
		store:    store,
		tookOver: make(chan struct{}),
	}
	err := d.run(ctx)
	switch werr := d.log.error(); {
	case err != nil && parent.Err() != nil:
		err = fmt.Errorf("interrupted: %w", context.Cause(parent))
	case werr != nil:
		err = werr
	}
	var value, writes int
	if d.res != nil {
		value, writes = d.res.snapshot()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	lost := max(writes-value, 0)
	if value != writes {
		d.failures = append(d.failures, fmt.Sprintf("counter=%d but %d increments were accepted", value, writes))
	}
	if d.stale != 1 && err == nil {
		d.failures = append(d.failures, fmt.Sprintf("%d stale writes rejected, want 1", d.stale))
	}
	writesWord := "stale write"
	if d.stale != 1 {
		writesWord = "stale writes"
	}
	_, werr := fmt.Fprintf(stdout, "demo: %d critical sections, counter=%d, %d %s rejected, %d lost updates\n", writes, value, d.stale, writesWord, lost)
	if werr != nil && err == nil {
		err = fmt.Errorf("writing the summary: %w", werr)
	}
	for _, f := range d.failures {
		fmt.Fprintf(stderr, "etcdlock demo: FAILED: %s\n", f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "etcdlock demo: %s\n", cmdline.OneLine(err.Error()))
	}
	if len(d.failures) > 0 || err != nil {
		return exitFailure
	}
	return exitOK
}

// demo is one run of the demo: what its workers share.
type demo struct {
	log   *eventLog
	lg    *zap.Logger
	res   resource // the counter; nil until run creates it
	store string   // "sqlite" or "memory": where the counter lives
	prog  progress
	proxy *embedded.Proxy  // between the paused worker's client and etcd
	obs   *clientv3.Client // a direct client for watching and checking

	mu       sync.Mutex
	paused   string        // name of the paused worker, once paused
	pausedAt fencing.Token // its token
	takeover string        // the worker granted the lock during the pause
	takeTok  fencing.Token // its token
	tookOver chan struct{} // closed once the takeover's critical section is done
	stale    int           // stale writes rejected
	failures []string      // invariant violations
}

// worker is one contender of the demo.
type worker struct {
	name   string
	cli    *clientv3.Client
	m      *lock.Mutex
	pauses bool // its client goes through the proxy, and it pauses
}

// fail records an invariant violation and prints it as an event.
func (d *demo) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.log.printf("INVARIANT FAILED: %s", msg)
	d.mu.Lock()
	d.failures = append(d.failures, msg)
	d.mu.Unlock()
}

// run starts the server, the proxy and the workers, orchestrates the pause,
// stops everything and checks that no key is left. It returns an error for
// anything but the invariants, which it records in d.failures.
func (d *demo) run(ctx context.Context) (err error) {
	var cl closers
	defer func() { err = errors.Join(err, cl.close()) }()

	if d.res, err = newResource(d.store); err != nil {
		return fmt.Errorf("creating the counter: %w", err)
	}
	cl.add("counter", d.res.close)

	srv, err := embedded.StartServer(embedded.WithoutFsync())
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	cl.add("etcd server", srv.Close)
	if d.obs, err = srv.NewClient(); err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	cl.add("observer client", cmdline.CloseClient(d.obs))
	if d.proxy, err = embedded.StartProxy(srv.Endpoints()[0]); err != nil {
		return fmt.Errorf("starting proxy: %w", err)
	}
	cl.add("proxy", d.proxy.Close) // after the clients using it: closers run last-in first-out

	workers := make([]*worker, demoWorkers)
	for i := range workers {
		w := &worker{name: fmt.Sprintf("w%d", i+1), pauses: i == 0}
		var cfgs []func(*clientv3.Config)
		if w.pauses {
			cfgs = append(cfgs, func(c *clientv3.Config) { c.Endpoints = []string{d.proxy.Endpoint()} })
		}
		if w.cli, err = srv.NewClient(cfgs...); err != nil {
			return fmt.Errorf("creating client of %s: %w", w.name, err)
		}
		cl.add("client of "+w.name, cmdline.CloseClient(w.cli))
		w.m, err = lock.NewMutex(w.cli, demoLock,
			lock.WithTTL(demoTTL),
			lock.WithNamespace(demoNamespace),
			lock.WithHolder(w.name),
			lock.WithLogger(d.lg.Named(w.name)))
		if err != nil {
			return fmt.Errorf("creating mutex of %s: %w", w.name, err)
		}
		cl.add("mutex of "+w.name, func() error {
			err := w.m.Close()
			if w.pauses && errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return nil // its lease expired while paused: nothing to revoke
			}
			return err
		})
		workers[i] = w
	}
	d.log.printf("etcd ready; %d workers on lock %q, lease TTL %v; %s talks to etcd through a proxy",
		demoWorkers, demoLock, demoTTL, workers[0].name)
	d.log.printf("the counter is %s", d.res)

	// ctx ends the workers only on failure (or timeout). They are stopped
	// by closing stopping instead: a waiter then still gets the lock, does
	// its critical section and unlocks, so that no Lock is cancelled.
	wctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	stopping := make(chan struct{})
	var wg sync.WaitGroup
	pausedDone := make(chan struct{})
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w.pauses {
				defer close(pausedDone)
			}
			if err := d.work(wctx, stopping, w); err != nil {
				fail(err)
			}
		}()
	}
	// Once the paused worker is done, let the others run a few more
	// critical sections, then stop them all.
	select {
	case <-pausedDone:
		if err := d.prog.wait(wctx, d.prog.count()+demoAfter); err == nil {
			d.log.printf("stopping the workers")
		}
	case <-wctx.Done():
	}
	close(stopping)
	wg.Wait()
	if wctx.Err() != nil {
		return context.Cause(wctx) // a worker failed, or the demo timed out
	}
	return d.checkEmpty()
}

// checkEmpty records a failure if any key is left under the demo's
// namespace once every worker has unlocked and stopped.
func (d *demo) checkEmpty() error {
	ctx, cancel := context.WithTimeout(context.Background(), demoUnlockTTL)
	defer cancel()
	resp, err := d.obs.Get(ctx, demoNamespace, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("checking for leftover keys: %w", err)
	}
	if resp.Count != 0 {
		d.fail("%d keys left under %q after every worker stopped", resp.Count, demoNamespace)
	}
	return nil
}

// work is one worker's loop: lock, fenced read-modify-write, unlock, until
// stopping is closed. The pausing worker returns after its paused critical
// section. It returns an error, and abandons a wait, only when ctx ends.
func (d *demo) work(ctx context.Context, stopping <-chan struct{}, w *worker) error {
	for n := 1; ; n++ {
		select {
		case <-stopping:
			return nil
		default:
		}
		h, err := w.m.Lock(ctx)
		if err != nil {
			return fmt.Errorf("%s: lock: %w", w.name, err)
		}
		if w.pauses && n == demoPauseIn {
			return d.pausedSection(ctx, w, h)
		}
		tok := h.Token()
		takeover := d.granted(w.name, tok)
		d.section(w.name, tok)
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), demoUnlockTTL)
		err = h.Unlock(uctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: unlock token %d: %w", w.name, tok.Revision, err)
		}
		if takeover {
			close(d.tookOver)
		}
		d.prog.add()
	}
}

// granted prints a grant and reports whether it is the takeover: the first
// grant to another worker while the paused worker thinks it holds the lock.
func (d *demo) granted(name string, tok fencing.Token) bool {
	d.mu.Lock()
	takeover := d.paused != "" && d.takeover == ""
	if takeover {
		d.takeover, d.takeTok = name, tok
	}
	paused, old := d.paused, d.pausedAt
	d.mu.Unlock()
	if takeover {
		d.log.printf("%s acquired token %d: TAKEOVER, while %s still thinks it holds token %d", name, tok.Revision, paused, old.Revision)
	} else {
		d.log.printf("%s acquired token %d", name, tok.Revision)
	}
	return takeover
}

// section is a critical section of a worker that is not paused: read the
// counter and write it plus one, each access admitted by the fence.
func (d *demo) section(name string, tok fencing.Token) {
	v, err := d.res.read(tok)
	if err != nil {
		d.fail("%s's read with the current token %d was refused: %v", name, tok.Revision, err)
		return
	}
	if err := d.res.write(tok, v+1); err != nil {
		d.fail("%s's write with the current token %d was refused: %v", name, tok.Revision, err)
		return
	}
	d.log.printf("%s counter %d -> %d, unlocking", name, v, v+1)
}

// pausedSection is the paused worker's critical section: it reads, stops
// (its proxy paused) until another worker has taken the lock over, then
// resumes and writes with its old token, which the fence must reject.
func (d *demo) pausedSection(ctx context.Context, w *worker, h *lock.Hold) error {
	tok := h.Token()
	d.log.printf("%s acquired token %d", w.name, tok.Revision)
	v, err := d.res.read(tok)
	if err != nil {
		d.fail("%s's read with the current token %d was refused: %v", w.name, tok.Revision, err)
	}

	// Bystanders, not w: report when the lock tells w the hold is lost, and
	// when etcd deletes w's key.
	told := make(chan struct{})
	stopTold := context.AfterFunc(h.Context(), func() {
		defer close(told)
		if !errors.Is(context.Cause(h.Context()), lock.ErrReleased) {
			d.log.printf("%s's hold is lost, its Done closed (%s is not looking): %v", w.name, w.name, context.Cause(h.Context()))
		}
	})
	wctx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Add(1)
	go func() {
		defer watching.Done()
		seen := false
		for wr := range d.obs.Watch(wctx, tok.Key, clientv3.WithRev(tok.Revision+1), clientv3.WithFilterPut()) {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete && !seen {
					seen = true
					d.log.printf("etcd expired %s's lease and deleted its key at revision %d", w.name, ev.Kv.ModRevision)
				}
			}
		}
	}()
	defer func() {
		stopWatch()
		watching.Wait()
		if !stopTold() {
			<-told // Done has closed by now: lost, or unlocked below
		}
	}()

	d.mu.Lock()
	d.paused, d.pausedAt = w.name, tok
	d.mu.Unlock()
	d.proxy.Pause()
	pausedAt := time.Now()
	d.log.printf("%s read counter=%d, then stops: its connection is paused and it sleeps past its %v TTL without looking at Done", w.name, v, demoTTL)
	select {
	case <-d.tookOver:
	case <-time.After(demoMaxPause):
		d.fail("no other worker took the lock over within %v of pausing %s", demoMaxPause, w.name)
	case <-ctx.Done():
	}
	d.proxy.Unpause()
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	successor, succTok := d.takeover, d.takeTok
	d.mu.Unlock()
	d.log.printf("%s wakes up after %v (connection resumed) and carries on as if it held the lock",
		w.name, time.Since(pausedAt).Round(time.Millisecond))
	select {
	case <-h.Done():
		d.log.printf("%s's Done had closed: the lock told it (%v)", w.name, h.Err())
	default:
		d.fail("%s's Done is still open although etcd gave the lock to %s", w.name, successor)
	}

	err = d.res.write(tok, v+1)
	switch {
	case errors.Is(err, fencing.ErrStale):
		d.mu.Lock()
		d.stale++
		d.mu.Unlock()
		d.log.printf("%s write counter %d -> %d REJECTED by %s: %v (%s's token %d < %s's token %d)",
			w.name, v, v+1, d.res.refuser(), err, w.name, tok.Revision, successor, succTok.Revision)
	case err == nil:
		d.fail("%s's stale write with token %d was ACCEPTED after %s's token %d", w.name, tok.Revision, successor, succTok.Revision)
	default:
		d.fail("%s's stale write failed unexpectedly: %v", w.name, err)
	}

	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), demoUnlockTTL)
	defer cancel()
	switch err := h.Unlock(uctx); {
	case errors.Is(err, lock.ErrNotHeld):
		d.log.printf("%s unlock: %v", w.name, err)
	case err == nil:
		d.fail("%s's unlock of token %d succeeded although etcd deleted its key", w.name, tok.Revision)
	default:
		return fmt.Errorf("%s: unlock token %d: %w", w.name, tok.Revision, err)
	}
	return nil
}

// progress counts completed critical sections and lets a goroutine wait for
// a count. The zero value is ready to use.
type progress struct {
	mu      sync.Mutex
	n       int
	changed chan struct{} // closed and replaced at every add
}

// add counts one more.
func (p *progress) add() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// count returns the count.
func (p *progress) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// wait blocks until the count is at least n, or ctx ends (returning its
// cause).
func (p *progress) wait(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		if p.n >= n {
			p.mu.Unlock()
			return nil
		}
		if p.changed == nil {
			p.changed = make(chan struct{})
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// eventLog prints lines prefixed with the time since start. It is safe for
// concurrent use. Once a write fails it prints nothing more, and calls
// failed, if set, with the error.
type eventLog struct {
	mu     sync.Mutex
	w      io.Writer
	start  time.Time
	failed func(error)
	err    error // the first write error, wrapped
}

// printf prints one event line.
func (l *eventLog) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	_, err := fmt.Fprintf(l.w, "[%6.3fs] %s\n", time.Since(l.start).Seconds(), fmt.Sprintf(format, args...))
	if err != nil {
		l.err = fmt.Errorf("writing the events: %w", err)
		if l.failed != nil {
			l.failed(l.err)
		}
	}
}

// error returns the first write error, or nil.
func (l *eventLog) error() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// closers closes things in the reverse order of add, like defer, and
// joins their errors.
type closers []struct {
	what string
	fn   func() error
}

// add registers fn, which closes what.
func (c *closers) add(what string, fn func() error) {
	*c = append(*c, struct {
		what string
		fn   func() error
	}{what, fn})
}

// close runs every fn, last added first, and returns their errors joined.
func (c *closers) close() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		if err := (*c)[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("closing %s: %w", (*c)[i].what, err))
		}
	}
	*c = nil
	return errors.Join(errs...)
}
