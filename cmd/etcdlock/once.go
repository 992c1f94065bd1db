package main

import (
	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/lock"
)

// onceHelp is the part of run's help on --min-hold and --max-hold.
const onceHelp = `
With --min-hold D, NAME stays taken for at least D after run acquired it,
even if CMD ends sooner (its key moves to a lease that expires at D), and
run does not wait: if NAME is taken, it exits 0 at once without running
CMD. A cron entry that runs "etcdlock run --min-hold 50m NAME -- job" every
hour on every replica thus runs the job once an hour, on one replica, even
if the replicas' clocks or schedules differ by minutes. With --max-hold D,
run releases NAME D after it acquired it and stops CMD (exit 121), however
long CMD runs. D is measured by this machine's monotonic clock and etcd's
lease TTLs, never by comparing clocks across machines.
`

// checkHoldBounds validates --min-hold and --max-hold.
func (cfg *runConfig) checkHoldBounds() error {
	switch {
	case cfg.minHold.set && cfg.minHold.d <= 0, cfg.maxHold.set && cfg.maxHold.d <= 0:
		return cmdline.UsageError("--min-hold and --max-hold must be positive")
	case cfg.minHold.set && cfg.maxHold.set && cfg.minHold.d > cfg.maxHold.d:
		return cmdline.UsageError("--min-hold %v is more than --max-hold %v", cfg.minHold.d, cfg.maxHold.d)
	case cfg.minHold.set && cfg.timeout.set:
		return cmdline.UsageError("--min-hold does not wait: --timeout does not go with it")
	}
	return nil
}

// holdBounds returns the lock options of --min-hold and --max-hold.
func (cfg *runConfig) holdBounds() []lock.Option {
	var opts []lock.Option
	if cfg.minHold.set {
		opts = append(opts, lock.WithMinHold(cfg.minHold.d))
	}
	if cfg.maxHold.set {
		opts = append(opts, lock.WithMaxHold(cfg.maxHold.d))
	}
	return opts
}
