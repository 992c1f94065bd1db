// Command procnemesis runs etcdlock's process-level fault suite
// (internal/procnemesis): three etcd server processes with fsync on,
// holders in processes of their own, and a nemesis of signals and
// partitions. It is a maintainer's command:
//
//	go run ./internal/cmd/procnemesis -duration 5m -json report.json
//
// It prints a table per lock and a summary, writes the report as JSON if
// asked, and exits 0 if the run is valid with no violation, 1 if not, and
// 2 on bad flags. SIGINT or SIGTERM cuts the faults short and checks what
// ran; every process it started is killed and reaped before it exits.
// With -bug NAME every worker runs with a planted bug (internal/bugs), and
// the exit status is 0 only if the run found violations.
//
// Safety model: a lease-based lock cannot stop a paused holder from acting
// after its lease expired; the fencing token (the lock key's create
// revision, which only ever grows) makes the resource refuse it. This
// command measures both halves with real processes.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/etcdlock/etcdlock/internal/procnemesis"
)

func main() {
	var (
		cfg      procnemesis.Config
		jsonPath string
		verbose  bool
	)
	flag.DurationVar(&cfg.Duration, "duration", 60*time.Second, "how long the faults run")
	flag.DurationVar(&cfg.Warmup, "warmup", 5*time.Second, "fault-free warm-up")
	flag.IntVar(&cfg.Shards, "shards", 16, "worker locks")
	flag.IntVar(&cfg.WorkersPerShard, "workers", 3, "worker processes per lock (at least 2)")
	flag.IntVar(&cfg.Runs, "runs", 2, "concurrent loops of etcdlock run")
	flag.DurationVar(&cfg.TTL, "ttl", 2*time.Second, "holders' lease TTL, whole seconds")
	flag.Int64Var(&cfg.Seed, "seed", 0, "seed of the nemeses (0: from the clock)")
	flag.StringVar(&cfg.Dir, "dir", "", "keep binaries, data and histories in this directory")
	flag.StringVar(&jsonPath, "json", "", "write the report as JSON to this `file`")
	flag.BoolVar(&verbose, "v", false, "log every fault")
	flag.BoolVar(&cfg.Trace, "trace", false, "keep the members' logs, the workers' library logs (every lease renewal) and the watcher's events in the run's directory")
	flag.StringVar(&cfg.Bug, "bug", "", "run every worker with this planted bug (e.g. LeaseIDToken): the run must find violations")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "procnemesis: no arguments expected")
		os.Exit(2)
	}
	if verbose {
		cfg.Log = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := procnemesis.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "procnemesis:", err)
		os.Exit(1)
	}
	_ = rep.Table(os.Stdout)
	if jsonPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "procnemesis:", err)
			os.Exit(1)
		}
	}
	if cfg.Bug != "" { // a run with a planted bug must find it
		if rep.Violations == 0 {
			os.Exit(1)
		}
		return
	}
	if !rep.Valid || rep.Violations > 0 {
		os.Exit(1)
	}
}
