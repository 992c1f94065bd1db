// Command nemesis runs etcdlock's fault-injection suite on an embedded
// 3-member etcd cluster: a maintainer's tool, not part of what users
// install.
//
// Usage:
//
//	go run ./internal/cmd/nemesis [--duration D] [--seed S] [--ttl TTL] [--out DIR] [--json] [--v]
//	go run -tags etcdlock_bugs ./internal/cmd/nemesis   # with the planted bugs
//
// Run it with --help for what it does and its flags.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/internal/nemesis"
)

func main() { cmdline.Main(nemesisCmd()) }

// nemesisCmd returns the command.
func nemesisCmd() *cmdline.Command {
	return &cmdline.Command{
		Prog:    "nemesis",
		Summary: "run the fault-injection suite on an embedded 3-member cluster",
		Usage:   "go run [-tags etcdlock_bugs] ./internal/cmd/nemesis [--duration D] [--seed S] [--ttl TTL] [--out DIR] [--json] [--v]",
		Help:    nemesisHelp,
		Setup:   setupNemesis,
	}
}

// nemesisHelp is the command's description.
const nemesisHelp = `
Nemesis starts a 3-member embedded etcd cluster and runs every workload
(mutex with fencing outside and inside etcd, a mutex fenced in a SQLite
database by sqlfence, unfenced controls in memory and in SQLite, RW lock,
semaphore, election, where one candidate leads through election.Run)
while a nemesis injects faults from a random schedule:
member restarts, leader partitions and moves, member pauses, compaction,
client pauses past the lease TTL and client blackholes. Then it checks the
histories: grants replayed from a healthy watcher, porcupine over the
fenced register, the counter chain, and Observe's order. Finally it runs
each planted bug once and reports whether a checker caught it. The planted
bugs exist only in a binary built with -tags etcdlock_bugs (go run -tags
etcdlock_bugs ./internal/cmd/nemesis); any other build skips that part and
says so.

It prints one table per fault phase and workload, and the seeded-bug table;
with --json, one JSON object with at least the keys seed,
critical_sections, stale_rejected, lease_expiries, violations,
control_lost_updates, seeded_bugs_caught, seeded_bugs_total and valid.

The exit status is 0 when the run is valid, with no violation and every
planted bug caught; 1 otherwise. A failed run writes its histories and
porcupine's visualizations to a directory it names; --seed replays the
fault schedule (not the exact interleaving).

A fault that does not return within 90 s (its undo included) stops the
run: the report names it, is invalid, and points at a file with every
goroutine's stack.

The first SIGINT or SIGTERM ends the faults; the suite undoes them, checks
what ran and prints that report, marked interrupted, then exits with
128+N. A second signal, or a minute passing first, exits with 128+N at
once, without a report.`

// setupNemesis defines the command's flags.
func setupNemesis(fs *flag.FlagSet) cmdline.RunFunc {
	var (
		duration = fs.Duration("duration", 2*time.Minute, "time spent in the fault phases (checks and planted bugs come on top)")
		seed     = fs.Int64("seed", 0, "seed of the fault schedule; 0 picks one")
		asJSON   = fs.Bool("json", false, "print one JSON object instead of tables")
		ttl      = fs.Duration("ttl", 0, "lease TTL of every lock (whole seconds); 0 for the suite's default")
		out      = fs.String("out", "", "directory for the histories of a failed run (default: the temporary directory)")
		verbose  = fs.Bool("v", false, "log faults and progress to stderr")
	)
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		if *duration <= 0 {
			return nemesisCmd().BadUsage(stderr, "--duration must be positive, not %v", *duration)
		}
		lg := zap.NewNop()
		if *verbose {
			enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
			lg = zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), zapcore.InfoLevel))
		}
		cfg := nemesis.Config{
			Duration: *duration,
			Seed:     *seed,
			Tier:     nemesis.TierFull,
			TTL:      *ttl,
			OutDir:   *out,
			Logger:   lg,
		}
		rep, intr, err := runNemesis(ctx, cfg)
		if intr != nil && rep == nil {
			if err != nil {
				fmt.Fprintf(stderr, "nemesis: %v; quit without a report (%v)\n", intr, err)
			} else {
				fmt.Fprintf(stderr, "nemesis: %v; quit without a report\n", intr)
			}
			return intr.Status()
		}
		if err != nil {
			fmt.Fprintf(stderr, "nemesis: %v\n", err)
			return cmdline.ExitFailure
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			if err := enc.Encode(rep); err != nil {
				fmt.Fprintf(stderr, "nemesis: %v\n", err)
				return cmdline.ExitFailure
			}
		} else if err := rep.Table(stdout); err != nil {
			fmt.Fprintf(stderr, "nemesis: %v\n", err)
			return cmdline.ExitFailure
		}
		if intr != nil {
			fmt.Fprintf(stderr, "nemesis: %v; the report covers what ran until then\n", intr)
			return intr.Status()
		}
		if !rep.Valid || rep.Violations > 0 || rep.SeededBugsCaught < rep.SeededBugsTotal {
			return cmdline.ExitFailure
		}
		return cmdline.ExitOK
	}
}

// signalOfCause returns the stop signal that ended ctx, by the cause
// signal.NotifyContext gives it ("interrupt signal received"), or SIGTERM
// for an end without a signal, which counts as one.
func signalOfCause(ctx context.Context) os.Signal {
	if cmdline.CausedBySignal(ctx) {
		for _, sig := range cmdline.StopSignals {
			if strings.HasPrefix(context.Cause(ctx).Error(), sig.String()+" ") {
				return sig
			}
		}
	}
	return syscall.SIGTERM
}

// nemesisGrace bounds the wait, after the first stop signal, for the suite
// to undo its faults, check what ran and report.
const nemesisGrace = time.Minute

// runNemesis runs the suite under the signals of the process (see
// superviseNemesis).
func runNemesis(ctx context.Context, cfg nemesis.Config) (*nemesis.Report, *cmdline.Interrupted, error) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, cmdline.StopSignals...)
	defer signal.Stop(sigs)
	return superviseNemesis(ctx, sigs, nemesisGrace, func(ctx context.Context) (*nemesis.Report, error) {
		return nemesis.Run(ctx, cfg)
	})
}

// superviseNemesis runs run until it returns. The first stop signal on sigs
// (or the end of ctx, main's, which the first SIGINT or SIGTERM ends) ends
// run's context, so that the suite undoes its faults and reports what ran;
// intr is then that signal (SIGTERM if ctx ended otherwise). A second
// signal, or grace passing first, returns at once with a nil report and
// leaves run running: the process is about to exit.
func superviseNemesis(ctx context.Context, sigs <-chan os.Signal, grace time.Duration,
	run func(context.Context) (*nemesis.Report, error)) (rep *nemesis.Report, intr *cmdline.Interrupted, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		rep *nemesis.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := run(ctx)
		done <- result{rep, err}
	}()
	var graceC <-chan time.Time
	interrupt := func(sig os.Signal) {
		intr = &cmdline.Interrupted{Sig: sig}
		graceC = time.After(grace)
		cancel()
	}
	ctxDone := ctx.Done()
	for {
		select {
		case r := <-done:
			if intr != nil {
				select {
				case sig := <-sigs: // a second signal that came with the report
					return nil, &cmdline.Interrupted{Sig: sig}, nil
				default:
				}
			}
			return r.rep, intr, r.err
		case sig := <-sigs:
			if intr == nil {
				interrupt(sig)
				continue
			}
			return nil, &cmdline.Interrupted{Sig: sig}, nil
		case <-ctxDone:
			ctxDone = nil
			if intr != nil {
				continue // interrupt ended it
			}
			// A signal that ended main's context reaches sigs as well, at
			// once, unless it came before signal.Notify: the cause then
			// names it. (Taking it from sigs keeps it from counting as a
			// second signal.)
			select {
			case sig := <-sigs:
				interrupt(sig)
			case <-time.After(100 * time.Millisecond):
				interrupt(signalOfCause(ctx))
			}
		case <-graceC:
			return nil, intr, nil
		}
	}
}
