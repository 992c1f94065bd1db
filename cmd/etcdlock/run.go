package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/lock"
)

// runLockedCmd is "etcdlock run" (runCmd is a test helper).
var runLockedCmd = &command{
	name:      "run",
	summary:   "run a command while holding a lock; stop it if the lock is lost",
	usage:     "etcdlock run [flags] NAME [--] CMD [ARGS...]",
	takesArgs: true,
	help: `
Run acquires the lock NAME, runs CMD with ARGS while it holds it, and
releases it when CMD exits; it exits with CMD's status. CMD finds in its
environment ETCDLOCK_NAME (NAME), ETCDLOCK_KEY (the etcd key of the hold),
ETCDLOCK_TOKEN (the fencing token: that key's create revision) and
ETCDLOCK_LEASE (the key's lease ID, in hex).

The kind of lock, and how a Go program shares it (same NAME and namespace):

	run NAME           a mutex                lock.NewMutex: Lock
	run --write NAME   a reader-writer lock   lock.NewRWMutex: Lock
	run --shared NAME    (its read side)      lock.NewRWMutex: RLock
	run -n N NAME      a semaphore            lock.NewSemaphore: Acquire(ctx, 1)

Each kind keeps its keys apart (<namespace>mutex/NAME/, rw/NAME/, sem/NAME/)
and does not exclude the others. So once it holds NAME, run checks that no
other kind of NAME has keys; if one has, it releases NAME and exits 125
without running CMD. Runs that --shared runs must exclude take --write.
Waiters are served in the order they came; a waiting writer is not
overtaken by later readers. Every run with -n must give the same N.

Tokens: a plain or --write run's token is larger than that of every earlier
holder: pass it to what CMD writes to, and refuse lower ones. With
--shared, refuse a writer's token lower than the highest token seen, and a
reader's lower than the highest writer token seen (fencing.RWFence). With
-n, tokens of permits held at once are not ordered: guard writes to etcd
with a transaction that applies only while ETCDLOCK_KEY has create
revision ETCDLOCK_TOKEN (fencing.Commit).

Run waits for the lock as long as it takes, or up to --timeout; --timeout 0
tries once. The lease has a TTL of --ttl, renewed every third of it; if
etcdlock's machine dies, the lock is free again within --ttl. Flags may
come before or after NAME; everything after "--" (or after CMD) is CMD's.
` + onceHelp + recipesHelp + runListenHelp + seeAlsoHelp + exitStatusHelp,
	setup: setupRun,
}

// runConfig is run's parsed flags.
type runConfig struct {
	conn    cmdline.Conn
	shared  bool
	write   bool
	permits int64
	// permitsSet says -n was given, so that -n 0 is refused.
	permitsSet bool
	timeout    optDuration
	ttl        time.Duration
	grace      optDuration
	verbose    bool
	// minHold and maxHold bound the hold (lock.WithMinHold, WithMaxHold);
	// with minHold, run does not wait: see onceHelp.
	minHold optDuration
	maxHold optDuration
	metrics metricsFlags // --listen-metrics
	// lockDelay and etcdLayout take a Mutex (see recipesHelp).
	lockDelay  optDuration
	etcdLayout bool
}

// errWaitTimeout is the cause of a wait that --timeout ended.
var errWaitTimeout = errors.New("--timeout passed")

// setupRun defines run's flags.
func setupRun(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) int {
	cfg := &runConfig{}
	cfg.conn.Register(fs)
	fs.BoolVar(&cfg.shared, "shared", false, "take a read hold of the reader-writer lock NAME: --shared runs hold it together")
	fs.BoolVar(&cfg.write, "write", false, "take the write hold of the reader-writer lock NAME: excludes --shared runs")
	fs.Int64Var(&cfg.permits, "n", 0, "take one of `N` permits of the semaphore NAME: at most N runs at once")
	fs.Var(&cfg.timeout, "timeout", "give up (exit 124) unless the lock is acquired within this `duration`;\n0 tries once (default: wait as long as it takes)")
	cmdline.DurationVar(fs, &cfg.ttl, "ttl", lock.DefaultTTL, "`TTL` of the lock's lease, in whole seconds")
	fs.Var(&cfg.grace, "grace", "wait this `duration` between SIGTERM and SIGKILL when the lock is lost;\nless than a fifth of --ttl (default a tenth of --ttl, at least 100ms)")
	fs.BoolVar(&cfg.verbose, "verbose", false, "say on stderr when waiting, acquired and released")
	fs.Var(&cfg.minHold, "min-hold", "keep NAME taken for at least this `duration` after it was acquired, even if CMD\nends sooner; do not wait: exit 0 without running CMD if NAME is taken")
	cfg.metrics.Register(fs)
	fs.Var(&cfg.maxHold, "max-hold", "release NAME this `duration` after it was acquired, stopping CMD (exit 121)")
	fs.Var(&cfg.lockDelay, "lock-delay", "after a holder of NAME vanished without releasing, start no sooner than this\n`duration` after the loss")
	fs.BoolVar(&cfg.etcdLayout, "etcd-layout", false, "take etcd's own lock NAME, the one of \"etcdctl lock NAME\" (keys NAME/<lease>)")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		names, argv, err := positional(fs, 1, "NAME")
		if err == nil && len(argv) == 0 {
			err = cmdline.UsageError("missing CMD")
		}
		if err != nil {
			return argsFailed("run", fs, err, stdout, stderr)
		}
		fs.Visit(func(f *flag.Flag) { cfg.permitsSet = cfg.permitsSet || f.Name == "n" })
		return cfg.run(ctx, names[0], argv, stdout, stderr)
	}
}

// check validates the flags and NAME, and returns the timing.
func (cfg *runConfig) check(name string) (timing, error) {
	switch {
	case cfg.shared && cfg.write:
		return timing{}, cmdline.UsageError("--shared and --write do not go together")
	case (cfg.shared || cfg.write) && cfg.permitsSet:
		return timing{}, cmdline.UsageError("--shared and --write do not go together with -n")
	case cfg.permitsSet && (cfg.permits < 1 || cfg.permits > lock.MaxSemaphoreLimit):
		return timing{}, cmdline.UsageError("-n must be between 1 and %d, not %d", int64(lock.MaxSemaphoreLimit), cfg.permits)
	case cfg.timeout.set && cfg.timeout.d < 0:
		return timing{}, cmdline.UsageError("--timeout must not be negative, not %v (0 tries once)", cfg.timeout.d)
	}
	if err := cfg.checkHoldBounds(); err != nil {
		return timing{}, err
	}
	if err := cfg.checkRecipes(); err != nil {
		return timing{}, err
	}
	if err := lock.ValidateName(name); err != nil {
		return timing{}, cmdline.UsageError("NAME: %v", err)
	}
	tm, err := newTiming(cfg.ttl, cfg.grace)
	if err != nil {
		return timing{}, err
	}
	return tm, cfg.conn.Resolve()
}

// kind returns the kind of lock run takes: a mutex, unless -n, --shared or
// --write say otherwise.
func (cfg *runConfig) kind() lock.Kind {
	if cfg.lockDelay.set || cfg.etcdLayout {
		return lock.KindMutex
	}
	switch {
	case cfg.permitsSet:
		return lock.KindSemaphore
	case cfg.shared || cfg.write:
		return lock.KindRWMutex
	}
	return lock.KindMutex
}

// tryOnce says run does not wait: --min-hold, or --timeout 0.
func (cfg *runConfig) tryOnce() bool {
	return cfg.minHold.set || cfg.timeout.set && cfg.timeout.d == 0
}

// what names the hold run takes, for messages.
func (cfg *runConfig) what(name string) string {
	switch {
	case cfg.permitsSet:
		return fmt.Sprintf("semaphore %q (1 of %d permits)", name, cfg.permits)
	case cfg.shared:
		return fmt.Sprintf("lock %q (shared)", name)
	case cfg.write:
		return fmt.Sprintf("lock %q (write)", name)
	default:
		return fmt.Sprintf("lock %q", name)
	}
}

// runLock is the lock run takes: how to acquire it and to close it.
type runLock struct {
	acquire func(context.Context) (*lock.Hold, error)
	close   func() error
}

// open returns the lock run takes.
func (cfg *runConfig) open(cli *clientv3.Client, name string, tm timing, desc string) (runLock, error) {
	opts := []lock.Option{
		lock.WithTTL(tm.ttl),
		lock.WithSafetyMargin(tm.margin),
		lock.WithNamespace(cfg.conn.Namespace),
		lock.WithHolder(desc),
	}
	opts = append(opts, cfg.holdBounds()...)
	opts = append(opts, cfg.metrics.lockOptions(cfg.kind(), name)...)
	try := cfg.tryOnce()
	if rl, ok, err := cfg.openMutex(cli, name, try, opts); ok {
		return rl, err
	}
	switch cfg.kind() {
	case lock.KindSemaphore:
		s, err := lock.NewSemaphore(cli, name, cfg.permits, opts...)
		if err != nil {
			return runLock{}, err
		}
		return runLock{
			acquire: func(ctx context.Context) (*lock.Hold, error) {
				if try {
					return s.TryAcquire(ctx, 1)
				}
				return s.Acquire(ctx, 1)
			},
			close: s.Close,
		}, nil
	case lock.KindRWMutex:
		m, err := lock.NewRWMutex(cli, name, opts...)
		if err != nil {
			return runLock{}, err
		}
		acquire := m.Lock
		switch {
		case cfg.shared && try:
			acquire = m.TryRLock
		case cfg.shared:
			acquire = m.RLock
		case try:
			acquire = m.TryLock
		}
		return runLock{acquire: acquire, close: m.Close}, nil
	}
	m, err := lock.NewMutex(cli, name, opts...)
	if err != nil {
		return runLock{}, err
	}
	acquire := m.Lock
	if try {
		acquire = m.TryLock
	}
	return runLock{acquire: acquire, close: m.Close}, nil
}

// otherKinds is run's check, once it holds name, that no other kind of
// lock of that name has keys: it returns an error naming them, or nil. The
// kinds do not exclude each other, so a plain run (a mutex) and a --shared
// run (a reader-writer lock) of one name would both run CMD. Each run puts
// its key, then reads the others', so of two runs of different kinds that
// hold at once the later read sees the earlier put: at least one refuses.
// It costs one read (a Txn of three ranges, lock.Inspect) per run, after
// the grant.
func otherKinds(ctx context.Context, cli *clientv3.Client, ns string, kind lock.Kind, name string) error {
	ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	st, err := lock.Inspect(ctx, cli, ns, name)
	if err != nil {
		return fmt.Errorf("checking that no other kind of lock is called %q: %w", name, err)
	}
	var found []string
	for _, l := range st.Locks {
		if l.Kind != kind && len(l.Keys) > 0 {
			keys := "keys"
			if len(l.Keys) == 1 {
				keys = "key"
			}
			found = append(found, fmt.Sprintf("%s (%d %s under %s)", kindName[l.Kind], len(l.Keys), keys, l.Prefix))
		}
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("%q is also in use as a %s, which does not exclude a %s: give every run and program of %q one kind (plain run: lock.NewMutex; --shared and --write: lock.NewRWMutex; -n: lock.NewSemaphore)",
		name, strings.Join(found, " and a "), kindName[kind], name)
}

// kindName names a kind of lock in messages.
var kindName = map[lock.Kind]string{
	lock.KindMutex:     "mutex",
	lock.KindRWMutex:   "reader-writer lock",
	lock.KindSemaphore: "semaphore",
}

// run is "etcdlock run NAME CMD...": acquire, run CMD under the hold,
// release. It returns the exit status.
func (cfg *runConfig) run(ctx context.Context, name string, argv []string, stdout, stderr io.Writer) int {
	start := time.Now()
	log := &cmdLog{w: stderr, name: "run", verbose: cfg.verbose}
	tm, err := cfg.check(name)
	if err != nil {
		return report(stderr, "run", err, exitUsage)
	}
	path, err := lookCmd(argv[0])
	if err != nil {
		return report(stderr, "run", err, exitRunFailure)
	}
	stopMetrics, err := cfg.metrics.start("run", 0)
	if err != nil {
		return report(stderr, "run", err, exitRunFailure)
	}
	defer stopMetrics()

	sigs := watchSignals(ctx)
	defer sigs.stop()
	actx, stopWatch := cancelOnStop(ctx, sigs.C)
	watching := true
	endWatch := func() *cmdline.Interrupted {
		if !watching {
			return nil
		}
		watching = false
		return stopWatch()
	}
	defer endWatch()

	cli, err := cfg.conn.Connect(actx, cfg.probePrefix(name))
	if intr := interruptedBy(err); intr != nil {
		return report(stderr, "run", fmt.Errorf("%w while connecting; CMD did not run", intr), intr.Status())
	}
	if err != nil {
		return report(stderr, "run", err, exitRunFailure)
	}
	defer cmdline.CloseQuietly(cli)
	cfg.metrics.srv.connected(cli)
	cfg.metrics.srv.holding(cfg.what(name), nil)
	l, err := cfg.open(cli, name, tm, holderDesc(start))
	if err != nil {
		return report(stderr, "run", err, exitRunFailure)
	}
	// closeLock closes the lock after CMD ran and the hold was released.
	// giveUp closes it after a failure that was reported already: quietly,
	// and at most giveUpTimeout, for etcd may be gone.
	closeLock := func() {
		if err := closeWithin(releaseTimeout, &cfg.conn, l.close); err != nil {
			log.errorf("closing %s: %v", cfg.what(name), err)
		}
	}
	giveUp := func() { _ = closeWithin(giveUpTimeout, &cfg.conn, l.close) }

	wctx := actx
	if cfg.timeout.set && cfg.timeout.d > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeoutCause(actx, cfg.timeout.d, errWaitTimeout)
		defer cancel()
	}
	log.infof("waiting for %s", cfg.what(name))
	h, err := l.acquire(wctx)
	intr := endWatch()
	switch {
	case err != nil:
		giveUp()
		switch {
		case intr != nil:
			return report(stderr, "run", fmt.Errorf("%w while waiting for %s; CMD did not run", intr, cfg.what(name)), intr.Status())
		case cfg.minHold.set && errors.Is(err, lock.ErrLocked):
			log.infof("%s is taken (this period's run happened or is running); CMD did not run", cfg.what(name))
			return exitOK
		case cfg.timeout.set && cfg.timeout.d == 0 && errors.Is(err, lock.ErrLocked):
			return report(stderr, "run", cmdline.Failf(exitTimeout, "%s not acquired (--timeout 0 tries once)%s", cfg.what(name), heldBy(cli, cfg.conn.Namespace, cfg.kind(), name)), 0)
		case errors.Is(err, errWaitTimeout):
			return report(stderr, "run", cmdline.Failf(exitTimeout, "%s not acquired within %v%s", cfg.what(name), cfg.timeout.d, heldBy(cli, cfg.conn.Namespace, cfg.kind(), name)), 0)
		default:
			return report(stderr, "run", fmt.Errorf("acquiring %s: %w", cfg.what(name), err), exitRunFailure)
		}
	case intr != nil:
		cfg.release(ctx, log, h, name)
		giveUp()
		return report(stderr, "run", fmt.Errorf("%w as %s was acquired; CMD did not run", intr, cfg.what(name)), intr.Status())
	}
	if err := h.Err(); err != nil {
		// Not exitLost: that says CMD ran and was stopped.
		giveUp()
		return report(stderr, "run", fmt.Errorf("%s lost before CMD started (%s); CMD did not run", cfg.what(name), lossReason(err)), exitRunFailure)
	}
	// A stop signal that comes now is forwarded to CMD once it starts.
	// etcd's layout (--etcd-layout) lives outside the namespace, where the
	// other kinds cannot be.
	if !cfg.etcdLayout {
		if err := otherKinds(context.WithoutCancel(ctx), cli, cfg.conn.Namespace, cfg.kind(), name); err != nil {
			cfg.release(ctx, log, h, name)
			giveUp()
			return report(stderr, "run", fmt.Errorf("%w; CMD did not run", err), exitRunFailure)
		}
	}
	cfg.metrics.srv.holding(cfg.what(name), h)
	tok := h.Token()
	log.infof("acquired %s: token %d, key %s, lease %s", cfg.what(name), tok.Revision, tok.Key, leaseHex(h.Lease()))

	c, err := startChild(path, argv, childEnv(name, tok, h.Lease()), stdout, stderr)
	if err != nil {
		cfg.release(ctx, log, h, name)
		giveUp()
		return report(stderr, "run", fmt.Errorf("starting CMD: %w", err), exitRunFailure)
	}
	o := supervise(c, h, tm.grace, sigs.C)
	if o.lost != nil {
		log.errorf("%s lost while CMD ran (%s); %s", cfg.what(name), lossReason(o.lost), o.stopped(tm.grace))
		giveUp() // revokes the lease, if etcd answers
		return exitLost
	}
	if cfg.release(ctx, log, h, name) {
		closeLock()
	} else {
		giveUp()
	}
	return o.status
}

// release unlocks h once CMD has exited, on a bounded context, and says so
// on stderr if it could not. It reports whether it released h.
func (cfg *runConfig) release(ctx context.Context, log *cmdLog, h *lock.Hold, name string) bool {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	err := h.Unlock(uctx)
	switch {
	case err == nil:
		log.infof("released %s", cfg.what(name))
	case errors.Is(err, lock.ErrNotHeld):
		var lost *lock.LostError
		if errors.As(err, &lost) {
			log.errorf("%s was lost as CMD ended (%s); CMD was not stopped", cfg.what(name), lossReason(lost))
		}
	default:
		log.errorf("releasing %s: %v; it ends when its lease expires, within %v", cfg.what(name), err, cfg.ttl)
	}
	return err == nil
}

// interruptedBy returns the interruption err reports, or nil.
func interruptedBy(err error) *cmdline.Interrupted {
	var intr *cmdline.Interrupted
	if errors.As(err, &intr) {
		return intr
	}
	return nil
}

// heldBy describes the oldest key of the lock, "; held by <holder> (token
// N)", or returns "" if it cannot tell within a second.
func heldBy(cli *clientv3.Client, ns string, kind lock.Kind, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := lock.Inspect(ctx, cli, ns, name)
	if err != nil || len(st.Lock(kind).Keys) == 0 {
		return ""
	}
	k := st.Lock(kind).Keys[0]
	return fmt.Sprintf("; held by %s (token %d)", k.Holder, k.Token.Revision)
}
