package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	recipe "go.etcd.io/etcd/client/v3/experimental/recipes"

	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/lock"
)

// The read-write lock and semaphore rows, each beside the row it is
// compared with:
//
//   - etcdlock-rw readers (8 readers and 1 writer, every hold counted)
//     against the mutex with the same 9 contenders: readers must share;
//   - etcdlock-rw writers (8 writers) against etcd's recipes.RWMutex;
//   - etcdlock-sem contended (16 contenders on 4 permits, 1 each) against
//     the mutex with the same 16.
//
// Beside the readers and the semaphore runs put parallel: as many clients,
// each putting its own key in a loop. A read hold or a permit is two writes
// (the enqueue and the release), so half that row's rate is what the
// server can give those rows at most. The permit floor rows (see
// bench_floor_permits.go) run beside them too, with their ratio to the
// mutex; the etcdlock rows give their rate over the floor's (/floor).
func rwAndSemaphorePlan() []group {
	mutexRow := func(n int) cellKey { return cellKey{etcdlockImpl.name, "contended", n} }
	vsMutex := func(n int) *baseline {
		return &baseline{key: mutexRow(n), kind: ratioSpeed, label: "holds/s of etcdlock mutex"}
	}
	rw := contendedWith("etcdlock-rw", "readers", 9, newRWLocker(8), vsMutex(9))
	rw.floor = &cellKey{"floor-rw", "readers", 9}
	sem := contendedWith("etcdlock-sem", "contended", 16, newSemLocker(4), vsMutex(16))
	sem.floor = &cellKey{"floor-sem", "contended", 16}
	return []group{
		{cells: []*cell{
			rw,
			contended(etcdlockImpl, 9, nil),
			parallelPuts(9),
			rwFloorCell(8, true, vsMutex(9)),
			rwFloorCell(8, false, vsMutex(9)),
		}},
		{cells: []*cell{
			contendedWith("etcdlock-rw", "writers", 8, newRWLocker(0), &baseline{key: cellKey{"recipes-rw", "writers", 8}, kind: ratioSpeed, label: "holds/s of recipes-rw"}),
			contendedWith("recipes-rw", "writers", 8, newRecipesWriter, nil),
		}},
		{cells: []*cell{
			sem,
			contended(etcdlockImpl, 16, nil),
			parallelPuts(16),
			semFloorCell(16, 4, true, vsMutex(16)),
			semFloorCell(16, 4, false, vsMutex(16)),
		}},
	}
}

// rwLocker is a contender on a lock.RWMutex, reading or writing.
type rwLocker struct {
	cli    *clientv3.Client
	m      *lock.RWMutex
	reader bool
}

// newRWLocker makes contenders of which the first readers read and the rest
// write.
func newRWLocker(readers int) func(env *benchEnv, ns string, i int) (locker, error) {
	return func(env *benchEnv, ns string, i int) (locker, error) {
		cli, err := env.newClient()
		if err != nil {
			return nil, err
		}
		m, err := lock.NewRWMutex(cli, "rw", lock.WithNamespace(ns), lock.WithTTL(benchTTL*time.Second))
		if err != nil {
			return nil, errors.Join(err, cmdline.CloseClient(cli)())
		}
		return &rwLocker{cli: cli, m: m, reader: i < readers}, nil
	}
}

func (l *rwLocker) lock(ctx context.Context) (func(context.Context) error, error) {
	acquire := l.m.Lock
	if l.reader {
		acquire = l.m.RLock
	}
	h, err := acquire(ctx)
	if err != nil {
		return nil, err
	}
	return h.Unlock, nil
}

func (l *rwLocker) close() error { return errors.Join(l.m.Close(), cmdline.CloseClient(l.cli)()) }

// recipesWriter is a writer on etcd's experimental recipes.RWMutex, with a
// session of its own. The recipe takes no context: a Lock in progress
// cannot be cancelled.
type recipesWriter struct {
	cli *clientv3.Client
	s   *concurrency.Session
	m   *recipe.RWMutex
}

func newRecipesWriter(env *benchEnv, ns string, _ int) (locker, error) {
	cli, s, err := env.newSession()
	if err != nil {
		return nil, err
	}
	return &recipesWriter{cli: cli, s: s, m: recipe.NewRWMutex(s, ns+"recipes-rw")}, nil
}

func (l *recipesWriter) lock(context.Context) (func(context.Context) error, error) {
	if err := l.m.Lock(); err != nil {
		return nil, err
	}
	return func(context.Context) error { return l.m.Unlock() }, nil
}

func (l *recipesWriter) close() error { return errors.Join(l.s.Close(), cmdline.CloseClient(l.cli)()) }

// semLocker is a contender taking one permit of a lock.Semaphore.
type semLocker struct {
	cli *clientv3.Client
	s   *lock.Semaphore
}

func newSemLocker(limit int64) func(env *benchEnv, ns string, i int) (locker, error) {
	return func(env *benchEnv, ns string, _ int) (locker, error) {
		cli, err := env.newClient()
		if err != nil {
			return nil, err
		}
		s, err := lock.NewSemaphore(cli, "sem", limit, lock.WithNamespace(ns), lock.WithTTL(benchTTL*time.Second))
		if err != nil {
			return nil, errors.Join(err, cmdline.CloseClient(cli)())
		}
		return &semLocker{cli: cli, s: s}, nil
	}
}

func (l *semLocker) lock(ctx context.Context) (func(context.Context) error, error) {
	h, err := l.s.Acquire(ctx, 1)
	if err != nil {
		return nil, err
	}
	return h.Unlock, nil
}

func (l *semLocker) close() error { return errors.Join(l.s.Close(), cmdline.CloseClient(l.cli)()) }

// measuresParallelPut says what a put parallel row measures.
const measuresParallelPut = "one Put, each client putting its own key in a loop; latency of the Put"

// parallelPuts returns the cell of n clients putting in a loop: the
// server's write rate with as many clients as the row beside it.
func parallelPuts(n int) *cell {
	c := contendedWith("put", "parallel", n, newPutLocker, nil)
	c.measures = measuresParallelPut
	return c
}

// putLocker is a client putting its own key: its "lock" is one Put and its
// unlock does nothing.
type putLocker struct {
	cli *clientv3.Client
	key string
}

func newPutLocker(env *benchEnv, ns string, i int) (locker, error) {
	cli, err := env.newClient()
	if err != nil {
		return nil, err
	}
	return &putLocker{cli: cli, key: fmt.Sprintf("%sput-%d", ns, i)}, nil
}

func (l *putLocker) lock(ctx context.Context) (func(context.Context) error, error) {
	if _, err := l.cli.Put(ctx, l.key, benchValue); err != nil {
		return nil, err
	}
	return func(context.Context) error { return nil }, nil
}

func (l *putLocker) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, err := l.cli.Delete(ctx, l.key)
	return errors.Join(err, cmdline.CloseClient(l.cli)())
}
