package main

import (
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/lock"
)

const recipesHelp = `
With --lock-delay D, the lock is the Mutex NAME (keys under
<namespace>mutex/NAME/, as lock.NewMutex with lock.WithLockDelay): after a
holder vanished without releasing (its machine died, its lease expired, its
key was deleted by hand), the next run starts no sooner than D after the
loss, so that what the lost CMD still had in flight can drain; after a
clean release, at once. Every run of NAME must give --lock-delay.

With --etcd-layout, the lock is etcd's own: NAME is the prefix that
"etcdctl lock NAME" and etcd's concurrency.NewMutex(session, NAME) use (keys
NAME/<lease>, outside the namespace), and run excludes them, in the order
all asked: for moving a fleet from etcdctl lock to etcdlock one machine at
a time. etcd's side still stalls up to 100ms per handoff and unlocks
without a guard. Neither goes with --shared, -n or --min-hold, nor with
each other.
`

// checkRecipes validates --lock-delay and --etcd-layout.
func (cfg *runConfig) checkRecipes() error {
	if !cfg.lockDelay.set && !cfg.etcdLayout {
		return nil
	}
	switch {
	case cfg.lockDelay.set && cfg.lockDelay.d <= 0:
		return cmdline.UsageError("--lock-delay must be positive, not %v", cfg.lockDelay.d)
	case cfg.lockDelay.set && cfg.etcdLayout:
		return cmdline.UsageError("--lock-delay and --etcd-layout do not go together (etcd's Mutex marks no clean release)")
	case cfg.shared || cfg.write || cfg.permitsSet || cfg.minHold.set:
		return cmdline.UsageError("--lock-delay and --etcd-layout take a mutex: not with --shared, --write, -n or --min-hold")
	}
	return nil
}

// openMutex returns the Mutex of --lock-delay or --etcd-layout, or ok
// false when neither is given.
func (cfg *runConfig) openMutex(cli *clientv3.Client, name string, try bool, opts []lock.Option) (rl runLock, ok bool, err error) {
	var m *lock.Mutex
	switch {
	case cfg.etcdLayout:
		m, err = lock.NewEtcdMutex(cli, name, opts...)
	case cfg.lockDelay.set:
		m, err = lock.NewMutex(cli, name, append(opts, lock.WithLockDelay(cfg.lockDelay.d))...)
	default:
		return runLock{}, false, nil
	}
	if err != nil {
		return runLock{}, true, err
	}
	acquire := m.Lock
	if try {
		acquire = m.TryLock
	}
	return runLock{acquire: acquire, close: m.Close}, true, nil
}

// probePrefix is the prefix run reads to check its access to etcd.
func (cfg *runConfig) probePrefix(name string) string {
	if cfg.etcdLayout {
		return name + "/"
	}
	return lock.KeyPrefix(cfg.conn.Namespace, cfg.kind(), name)
}
