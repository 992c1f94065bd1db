package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// electCmd is "etcdlock elect".
var electCmd = &command{
	name:      "elect",
	summary:   "run a command only while this process leads an election",
	usage:     "etcdlock elect [flags] NAME [--] CMD [ARGS...]",
	takesArgs: true,
	help: `
Elect campaigns in the election NAME (keys under <namespace>election/NAME/)
and runs CMD with ARGS only while this process leads. If leadership is
lost, CMD is stopped as described below and elect campaigns again, in line
behind the candidates already waiting; when it leads again it starts CMD
afresh. When CMD exits on its own, elect resigns, so that the next
candidate leads at once, and exits with CMD's status.

Run elect on several machines with the same NAME: one CMD runs, and when its
machine or its etcdlock dies, another takes over about --ttl later (the
lease of the dead leader must expire first). CMD finds in its environment
ETCDLOCK_NAME (NAME), ETCDLOCK_KEY (the leader key), ETCDLOCK_TOKEN (the
term's fencing token: the key's create revision, larger than every earlier
term's) and ETCDLOCK_LEASE (the key's lease ID, in hex).

--value is what the candidate publishes as the leader's value while it
leads (etcdlock observe and status show it; a Go program reads it with
election.Leader). Flags may come before or after NAME; everything after
"--" (or after CMD) is CMD's. If a campaign fails (etcd unreachable), elect
says so on stderr and tries again, waiting up to 5s between attempts.
` + electListenHelp + seeAlsoHelp + exitStatusHelp,
	setup: setupElect,
}

// electConfig is elect's parsed flags.
type electConfig struct {
	conn    cmdline.Conn
	value   string
	ttl     time.Duration
	grace   optDuration
	verbose bool
	metrics metricsFlags // --listen-metrics
}

// setupElect defines elect's flags.
func setupElect(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) int {
	cfg := &electConfig{}
	cfg.conn.Register(fs)
	fs.StringVar(&cfg.value, "value", "", "the `value` to publish while leading (default \"host:pid since <start time>\")")
	cmdline.DurationVar(fs, &cfg.ttl, "ttl", election.DefaultTTL, "`TTL` of the candidate's lease, in whole seconds: failover takes about this long")
	fs.Var(&cfg.grace, "grace", "wait this `duration` between SIGTERM and SIGKILL when leadership is lost;\nless than a fifth of --ttl (default a tenth of --ttl, at least 100ms)")
	fs.BoolVar(&cfg.verbose, "verbose", false, "say on stderr when campaigning, leading and resigning")
	cfg.metrics.Register(fs)
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		names, argv, err := positional(fs, 1, "NAME")
		if err == nil && len(argv) == 0 {
			err = cmdline.UsageError("missing CMD")
		}
		if err != nil {
			return argsFailed("elect", fs, err, stdout, stderr)
		}
		return cfg.run(ctx, names[0], argv, stdout, stderr)
	}
}

// check validates the flags and NAME, and returns the timing.
func (cfg *electConfig) check(name string) (timing, error) {
	if err := election.ValidateName(name); err != nil {
		return timing{}, cmdline.UsageError("NAME: %v", err)
	}
	if len(cfg.value) > election.MaxValueLen {
		return timing{}, cmdline.UsageError("--value has %d bytes, more than %d", len(cfg.value), election.MaxValueLen)
	}
	tm, err := newTiming(cfg.ttl, cfg.grace)
	if err != nil {
		return timing{}, err
	}
	return tm, cfg.conn.Resolve()
}

// campaignPause bounds the pause between failed campaigns.
const campaignPause = 5 * time.Second

// run is "etcdlock elect NAME CMD...". It returns the exit status.
func (cfg *electConfig) run(ctx context.Context, name string, argv []string, stdout, stderr io.Writer) int {
	start := time.Now()
	log := &cmdLog{w: stderr, name: "elect", verbose: cfg.verbose}
	tm, err := cfg.check(name)
	if err != nil {
		return report(stderr, "elect", err, exitUsage)
	}
	path, err := lookCmd(argv[0])
	if err != nil {
		return report(stderr, "elect", err, exitRunFailure)
	}
	stopMetrics, err := cfg.metrics.start("elect", tm.grace+time.Second)
	if err != nil {
		return report(stderr, "elect", err, exitRunFailure)
	}
	defer stopMetrics()
	value := cfg.value
	if value == "" {
		value = holderDesc(start)
	}

	sigs := watchSignals(ctx)
	defer sigs.stop()
	prefix := election.KeyPrefix(cfg.conn.Namespace, name)
	cctx, stopWatch := cancelOnStop(ctx, sigs.C)
	cli, err := cfg.conn.Connect(cctx, prefix)
	if intr := stopWatch(); intr != nil {
		if cli != nil {
			cmdline.CloseQuietly(cli)
		}
		return report(stderr, "elect", fmt.Errorf("%w while connecting; CMD did not run", intr), intr.Status())
	}
	if err != nil {
		return report(stderr, "elect", err, exitRunFailure)
	}
	defer cmdline.CloseQuietly(cli)
	cfg.metrics.srv.connected(cli)
	e, err := election.New(cli, name, append([]election.Option{
		election.WithTTL(tm.ttl),
		election.WithSafetyMargin(tm.margin),
		election.WithNamespace(cfg.conn.Namespace)}, cfg.metrics.electionOptions(name)...)...)
	if err != nil {
		return report(stderr, "elect", err, exitRunFailure)
	}
	// Closing resigns a current term and revokes the lease. When etcd
	// stopped answering, or the status is etcdlock's own (its one line
	// written), it is given giveUpTimeout and says nothing.
	quietClose := true
	defer func() {
		if !quietClose {
			if err := closeWithin(releaseTimeout, &cfg.conn, e.Close); err != nil {
				log.errorf("closing election %q: %v", name, err)
			}
			return
		}
		_ = closeWithin(giveUpTimeout, &cfg.conn, e.Close)
	}()

	pause := 50 * time.Millisecond
	for {
		log.infof("campaigning in election %q as %q", name, value)
		cfg.metrics.srv.holding(fmt.Sprintf("election %q", name), nil)
		cctx, stopWatch := cancelOnStop(ctx, sigs.C)
		term, err := e.Campaign(cctx, value)
		if err != nil && cctx.Err() == nil {
			if permanent(err) {
				stopWatch()
				return report(stderr, "elect", fmt.Errorf("campaigning in election %q: %w", name, err), exitRunFailure)
			}
			log.errorf("campaigning in election %q: %v; trying again in %v", name, err, pause)
			sleepCtx(cctx, pause)
			pause = min(2*pause, campaignPause)
		}
		if intr := stopWatch(); intr != nil {
			if term != nil {
				giveUpTerm(ctx, term)
			}
			return report(stderr, "elect", fmt.Errorf("%w while campaigning in election %q; CMD is not running", intr, name), intr.Status())
		}
		if err != nil {
			continue
		}
		pause = 50 * time.Millisecond
		tok := term.Token()
		if err := term.Err(); err != nil {
			log.errorf("leadership of election %q lost at once (%s); campaigning again", name, lossReason(err))
			continue
		}
		log.infof("leading election %q: token %d, key %s", name, tok.Revision, tok.Key)
		cfg.metrics.srv.holding(fmt.Sprintf("election %q", name), term)
		c, err := startChild(path, argv, childEnv(name, tok, term.Lease()), stdout, stderr)
		if err != nil {
			giveUpTerm(ctx, term)
			return report(stderr, "elect", fmt.Errorf("starting CMD: %w", err), exitRunFailure)
		}
		o := supervise(c, term, tm.grace, sigs.C)
		if o.lost == nil {
			quietClose = !cfg.resign(ctx, log, term, name)
			return o.status
		}
		if o.stop != nil {
			// Asked to stop while CMD ran: the loss does not undo that.
			log.errorf("leadership of election %q lost while CMD was stopping on %v (%s); %s",
				name, o.stop, lossReason(o.lost), o.stopped(tm.grace))
			giveUpTerm(ctx, term)
			return o.status
		}
		log.errorf("leadership of election %q lost while CMD ran (%s); %s; campaigning again",
			name, lossReason(o.lost), o.stopped(tm.grace))
		giveUpTerm(ctx, term)
	}
}

// resign ends term on a bounded context, saying so on stderr if it could
// not. It reports whether it resigned.
func (cfg *electConfig) resign(ctx context.Context, log *cmdLog, term *election.Term, name string) bool {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	err := term.Resign(rctx)
	switch {
	case err == nil:
		log.infof("resigned from election %q", name)
	case errors.Is(err, election.ErrNotLeader):
	default:
		log.errorf("resigning from election %q: %v; the term ends when its lease expires, within %v", name, err, cfg.ttl)
	}
	return err == nil
}

// giveUpTerm resigns term, lost or not, when what ends it has been
// reported already: the resign deletes the term's key if it is still there
// (nothing newer), so that the next candidate need not wait for the lease
// to expire. If etcd does not answer within giveUpTimeout (it may be what
// was lost), the key goes with the lease, within --ttl, and nothing more
// is said.
func giveUpTerm(ctx context.Context, term *election.Term) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), giveUpTimeout)
	defer cancel()
	_ = term.Resign(rctx)
}

// permanent reports whether a campaign error will not go away by trying
// again.
func permanent(err error) bool {
	return errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(err, rpctypes.ErrAuthFailed) ||
		errors.Is(err, rpctypes.ErrUserNotFound) || errors.Is(err, election.ErrInvalidValue)
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
