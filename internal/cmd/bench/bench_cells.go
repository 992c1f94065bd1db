package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
	"github.com/etcdlock/etcdlock/lock"
)

// Bounds of the bench's requests outside the measured loops.
const (
	// cleanupTimeout bounds each unlock, close and check.
	cleanupTimeout = 10 * time.Second
	// cellSlack is how long a cell may run past its duration (draining the
	// waiters, closing) before it is abandoned as hung.
	cellSlack = 2 * time.Minute
	// benchTTL is the lease TTL of both implementations' locks, in seconds.
	benchTTL = 10
)

// cellKey names a cell, and a row of the output.
type cellKey struct {
	impl       string
	scenario   string
	contenders int
}

// cell is one measured combination of an implementation and a scenario:
// one row of the output. New rows (election handoff, RW locks, semaphores,
// etcd's recipes) are new cells, usually made by uncontended or contended
// from a lockImpl, or by a measure function of their own.
type cell struct {
	impl       string // "put", "etcdlock", "concurrency", ...
	scenario   string // "put", "uncontended", "contended", ...
	contenders int
	measures   string    // what an operation and a latency are
	base       *baseline // what the ratio column compares with; nil for none
	// perPut, for the contended mutex rows, names the serial Put row their
	// rate is compared with, beside their rate over the floor row's of as
	// many contenders (see bench_floor.go); nil for other rows.
	perPut *cellKey
	// floor, for the readers and semaphore rows, names the permit floor
	// row their rate is compared with (/floor); nil for other rows.
	floor *cellKey
	// measure runs the cell for d against env's server using only keys
	// under ns, and returns what it measured. It waits for every goroutine
	// it starts and closes every client, session and lock it makes, also
	// on error; keys it leaves behind are reported as an error.
	measure func(ctx context.Context, env *benchEnv, ns string, d time.Duration) (sample, error)
	// serial, for a cell of an interleaved group instead of measure, sets
	// up one client's operation under ns: op does one operation; close
	// releases what serial made, and leaves no keys.
	serial func(ctx context.Context, env *benchEnv, ns string) (op func(context.Context) error, close func() error, err error)
}

// key returns the cell's name.
func (c *cell) key() cellKey { return cellKey{c.impl, c.scenario, c.contenders} }

// group is cells compared with one another. They run one after the other,
// in alternating order from round to round; or, if interleaved, all at
// once, one operation of each in turn (see runInterleaved).
type group struct {
	cells       []*cell
	interleaved bool
}

// ratioKind says how a ratio is computed.
type ratioKind int

const (
	// ratioSpeed is the cell's ops/s over the baseline's: higher is better.
	ratioSpeed ratioKind = iota
	// ratioTime is the cell's time per operation over the time of per
	// operations of the baseline: lower is better.
	ratioTime
)

// baseline is what a cell's ratio compares it with.
type baseline struct {
	key   cellKey
	kind  ratioKind
	per   int    // for ratioTime: baseline operations per cell operation
	label string // what the ratio is of, shown after it
}

// sample is what one run of a cell measured.
type sample struct {
	ops     int           // operations completed within the duration
	elapsed time.Duration // the measured time
	// cpu is the process's CPU time over the measured time (cpuOK false:
	// not measured).
	cpu   time.Duration
	cpuOK bool
	lat   []time.Duration // one latency per operation
	// byContender is the operations of each contender, in order, for cells
	// of several contenders.
	byContender []int
	// perContender is each contender's latencies, in order, for contended
	// cells (the scale rows take the writer's wait from it).
	perContender [][]time.Duration
	// heapPerHold and goroutinesPerHold, for the holds cell (see
	// bench_scale.go), are the heap bytes and goroutines per live hold.
	heapPerHold, goroutinesPerHold float64
	// reqs, for contended cells, is what the clients asked of etcd over
	// the measured time.
	reqs *reqCounts
	// wal, for contended and put serial cells, is the server's WAL fsyncs
	// over the measured time.
	wal walUse
}

// opsPerSec returns the sample's throughput.
func (s sample) opsPerSec() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ops) / s.elapsed.Seconds()
}

// locker is one contender's lock, with its own client (and session). It is
// used by one goroutine at a time.
type locker interface {
	// lock blocks until the lock is held and returns the function that
	// unlocks it.
	lock(ctx context.Context) (unlock func(context.Context) error, err error)
	// close releases everything the locker made: lock, session, client.
	close() error
}

// lockImpl is a lock implementation the bench compares.
type lockImpl struct {
	name string
	// newLocker makes a contender of the lock called name under ns.
	newLocker func(env *benchEnv, ns, name string) (locker, error)
}

// The implementations measured.
var (
	etcdlockImpl    = lockImpl{name: "etcdlock", newLocker: newEtcdlockLocker}
	concurrencyImpl = lockImpl{name: "concurrency", newLocker: newConcurrencyLocker}
)

// Descriptions of what each scenario measures.
const (
	measuresPut         = "one Put; latency of the Put"
	measuresUncontended = "one Lock+Unlock cycle; latency of the cycle"
	measuresContended   = "one empty critical section; latency is the wait from calling Lock to holding"
)

// benchPlan returns the groups of cells to run for cfg.
func benchPlan(cfg benchConfig) []group {
	put := &cell{impl: "put", scenario: "put", contenders: 1, measures: measuresPut, serial: serialPut}
	twoPuts := &baseline{key: put.key(), kind: ratioTime, per: 2, label: "time of 2 puts"}
	bare := &cell{impl: "txn", scenario: "uncontended", contenders: 1, measures: measuresBareTxns, base: twoPuts, serial: serialBareTxns}
	plan := []group{{interleaved: true, cells: []*cell{
		put,
		uncontended(etcdlockImpl, twoPuts),
		uncontended(concurrencyImpl, twoPuts),
		bare,
	}}}
	for _, n := range cfg.contenders {
		base := &baseline{
			key:   cellKey{concurrencyImpl.name, "contended", n},
			kind:  ratioSpeed,
			label: "cs/s of concurrency",
		}
		// The serial Put runs in turn with these rows, so that their
		// ratios to it share the machine's mood.
		put := serialPutCell(n)
		cells := []*cell{
			contended(etcdlockImpl, n, base),
			contended(concurrencyImpl, n, nil),
			floorCell(n, true),
			floorCell(n, false),
		}
		for _, c := range cells {
			c.perPut = new(put.key())
		}
		plan = append(plan, group{cells: append([]*cell{put}, cells...)})
	}
	plan = append(plan, rwAndSemaphorePlan()...)
	plan = append(plan, group{cells: []*cell{
		handoff(etcdlockElection, &baseline{
			key:   cellKey{concurrencyElection.name, "handoff", 2},
			kind:  ratioSpeed,
			label: "handoffs/s of concurrency-election",
		}),
		handoff(concurrencyElection, nil),
	}})
	return plan
}

// benchValue is the value of the bench's own puts: about the size of a lock
// key's holder description.
var benchValue = strings.Repeat("v", 24)

// serialPut sets up Puts of one key by one client.
func serialPut(ctx context.Context, env *benchEnv, ns string) (func(context.Context) error, func() error, error) {
	cli, err := env.newClient()
	if err != nil {
		return nil, nil, err
	}
	key, val := ns+"put", benchValue
	op := func(ctx context.Context) error {
		_, err := cli.Put(ctx, key, val)
		return err
	}
	return op, func() error {
		dctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		_, err := cli.Delete(dctx, key)
		return errors.Join(err, cmdline.CloseClient(cli)())
	}, nil
}

// measuresSerialPut says what the put serial rows measure.
const measuresSerialPut = "one Put by one client, measured in turn with the contended rows of as many contenders as this row says; latency of the Put"

// serialPutCell returns the cell of serial Puts by one client measured in
// turn with the contended rows of n contenders, for their /put column.
func serialPutCell(n int) *cell {
	c := &cell{impl: "put", scenario: "serial", contenders: n, measures: measuresSerialPut}
	c.measure = func(ctx context.Context, env *benchEnv, ns string, d time.Duration) (s sample, err error) {
		op, closeFn, err := serialPut(ctx, env, ns)
		if err != nil {
			return s, err
		}
		defer func() { err = errors.Join(err, closeFn()) }()
		ctx, cancel := context.WithTimeout(ctx, d+cellSlack)
		defer cancel()
		if err := op(ctx); err != nil { // warm-up: connection
			return s, err
		}
		cpu0, ok0 := processCPU()
		wal0 := env.tally.wal()
		start := time.Now()
		for s.elapsed < d {
			t0 := time.Now()
			if err := op(ctx); err != nil {
				return s, err
			}
			s.lat = append(s.lat, time.Since(t0))
			s.ops++
			s.elapsed = time.Since(start)
		}
		cpu1, ok1 := processCPU()
		s.cpu, s.cpuOK, s.wal = cpu1-cpu0, ok0 && ok1, env.tally.wal().sub(wal0)
		return s, nil
	}
	return c
}

// measuresBareTxns says what the txn uncontended row measures.
const measuresBareTxns = "the two transactions of an uncontended Lock+Unlock of lock.Mutex, sent bare; latency of the pair"

// serialBareTxns sets up the two requests an uncontended lock.Mutex cycle
// sends (the enqueue Txn, in the lean shape an idle lock's acquires use,
// and the Unlock guarded by the create revision), on one key and lease of a
// client, with none of the library around them: what the uncontended
// etcdlock row would cost if the client did no work of its own.
func serialBareTxns(ctx context.Context, env *benchEnv, ns string) (func(context.Context) error, func() error, error) {
	cli, err := env.newClient()
	if err != nil {
		return nil, nil, err
	}
	// The locks keep their leases alive; this lease is granted for the
	// whole run instead, so that no renewal runs beside the measured
	// requests: the interleaved group can outlast benchTTL.
	ttl := bareTxnTTL(ctx)
	lg, err := cli.Grant(ctx, ttl)
	if err != nil {
		return nil, nil, errors.Join(err, cmdline.CloseClient(cli)())
	}
	prefix := ns + "lock/"
	key, val := keys.Slot(prefix, lg.ID, 0, 0), benchValue
	// The queue gives the mutex's comparisons, and the hold's token the
	// Unlock guard, so the shapes cannot drift apart.
	ifs := queue.EnqueueIf(queue.Exclusive{}.TryIf(prefix), key)
	put := clientv3.OpPut(key, val, clientv3.WithLease(lg.ID))
	op := func(ctx context.Context) error {
		r, err := cli.Txn(ctx).If(ifs...).Then(put).Commit()
		if err != nil {
			return err
		}
		if !r.Succeeded {
			return fmt.Errorf("key %s: the lock was not idle", key)
		}
		token := fencing.Token{Key: key, Revision: r.Header.Revision}
		_, err = cli.Txn(ctx).If(token.Cmp()).Then(clientv3.OpDelete(key)).Commit()
		return err
	}
	return op, func() error {
		rctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		_, err := cli.Revoke(rctx, lg.ID)
		return errors.Join(err, cmdline.CloseClient(cli)())
	}, nil
}

// bareTxnTTL is the TTL, in seconds, of the bare txn row's lease: past
// ctx's deadline (the end of the interleaved group), and at least benchTTL.
func bareTxnTTL(ctx context.Context) int64 {
	ttl := int64(benchTTL)
	if dl, ok := ctx.Deadline(); ok {
		ttl = max(ttl, int64(time.Until(dl)/time.Second)+benchTTL)
	}
	return ttl
}

// uncontended returns the cell of Lock+Unlock cycles of impl by one client.
func uncontended(impl lockImpl, base *baseline) *cell {
	c := &cell{impl: impl.name, scenario: "uncontended", contenders: 1, measures: measuresUncontended, base: base}
	c.serial = func(ctx context.Context, env *benchEnv, ns string) (func(context.Context) error, func() error, error) {
		l, err := impl.newLocker(env, ns, "lock")
		if err != nil {
			return nil, nil, err
		}
		return func(ctx context.Context) error { return cycle(ctx, l) }, l.close, nil
	}
	return c
}

// runInterleaved measures the cells of an interleaved group together: each
// sets up its client, and then they take turns, one operation each, until
// every cell has had about d of measured time. A cell's elapsed time is the
// sum of its own operations' latencies. Taking turns operation by operation
// makes the cells share every drift of the machine (the disk's fsync
// latency wanders by tens of percent over seconds here), which the
// comparison of whole cells run one after the other does not.
func runInterleaved(ctx context.Context, env *benchEnv, cells []*cell, nss []string, d time.Duration) (out []sample, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(len(cells))*d+cellSlack)
	defer cancel()
	ops := make([]func(context.Context) error, 0, len(cells))
	closers := make([]func() error, 0, len(cells))
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i]())
		}
	}()
	for i, c := range cells {
		op, closeFn, err := c.serial(ctx, env, nss[i])
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", c.impl, c.scenario, err)
		}
		ops, closers = append(ops, op), append(closers, closeFn)
		if err := op(ctx); err != nil { // warm-up: connection, lease grant
			return nil, fmt.Errorf("%s %s: %w", c.impl, c.scenario, err)
		}
	}
	out = make([]sample, len(cells))
	for i := range out {
		out[i].cpuOK = true
	}
	// The CPU of each operation is read around it, outside its timing: all
	// the work an operation causes (client, server, library) happens while
	// it is in flight, since one runs at a time.
	cpu0, cpuOK := processCPU()
	for turn := 0; ; turn++ {
		done := true
		for j := range ops {
			i := j
			if turn%2 == 1 { // alternate who goes first
				i = len(ops) - 1 - j
			}
			if out[i].elapsed >= d {
				continue
			}
			done = false
			t0 := time.Now()
			if err := ops[i](ctx); err != nil {
				return nil, fmt.Errorf("%s %s: %w", cells[i].impl, cells[i].scenario, err)
			}
			lat := time.Since(t0)
			out[i].lat = append(out[i].lat, lat)
			out[i].elapsed += lat
			out[i].ops++
			cpu1, ok := processCPU()
			cpuOK = cpuOK && ok
			out[i].cpu += cpu1 - cpu0
			out[i].cpuOK = cpuOK
			cpu0 = cpu1
		}
		if done {
			return out, nil
		}
	}
}

// cycle locks and unlocks l once.
func cycle(ctx context.Context, l locker) error {
	unlock, err := l.lock(ctx)
	if err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	if err := unlock(ctx); err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	return nil
}

// contended returns the cell of n contenders of impl on one lock, each with
// its own client and lock, looping Lock, an empty critical section, Unlock.
func contended(impl lockImpl, n int, base *baseline) *cell {
	return contendedWith(impl.name, "contended", n, func(env *benchEnv, ns string, _ int) (locker, error) {
		return impl.newLocker(env, ns, "lock")
	}, base)
}

// contendedWith returns the cell of n contenders made by mk (contender i of
// n), on one lock, looping lock, an empty critical section, unlock.
func contendedWith(impl, scenario string, n int, mk func(env *benchEnv, ns string, i int) (locker, error), base *baseline) *cell {
	c := &cell{impl: impl, scenario: scenario, contenders: n, measures: measuresContended, base: base}
	c.measure = func(ctx context.Context, env *benchEnv, ns string, d time.Duration) (s sample, err error) {
		ls := make([]locker, 0, n)
		defer func() {
			for _, l := range ls {
				err = errors.Join(err, l.close())
			}
		}()
		ctx, cancel := context.WithTimeout(ctx, d+cellSlack)
		defer cancel()
		for i := range n {
			l, err := mk(env, ns, i)
			if err != nil {
				return s, err
			}
			ls = append(ls, l)
			if err := cycle(ctx, l); err != nil { // warm-up: lease grant, connection
				return s, err
			}
		}
		var p *pacer
		if n > paceOver {
			p = &pacer{cli: env.admin, ns: ns}
		}
		return runContendersPaced(ctx, ls, d, &env.tally, p)
	}
	return c
}

// paceOver is the contenders above which a contended cell starts them one
// at a time (see pacer).
const paceOver = 64

// pacer starts a cell's contenders one at a time: each once the server has
// applied one more enqueue (a new key under ns, seen by a watch of cli),
// and the measured time begins when every contender has enqueued. 1,000
// Locks at one instant are 1,000 enqueue Txns at once, each of which reads
// the whole queue (etcd reads every key of a range it compares, and every
// key of a range sorted by create revision): on a loaded 2-core machine
// their apply took longer than etcd's request timeout, and Locks failed
// with "etcdserver: request timed out". The rows measure the contended
// loop's steady state, where the queue is full and each handoff brings one
// enqueue.
type pacer struct {
	cli *clientv3.Client
	ns  string
}

// start returns, for n contenders, a channel per contender closed when it
// may start (the first's at once), and one closed when all n have
// enqueued; stop ends the watch and waits for its goroutine.
func (p *pacer) start(ctx context.Context, n int) (starts []chan struct{}, ready chan struct{}, stop func(), err error) {
	wctx, cancel := context.WithCancel(ctx)
	wch := p.cli.Watch(wctx, p.ns, clientv3.WithPrefix(), clientv3.WithFilterDelete(), clientv3.WithCreatedNotify())
	if wr, ok := <-wch; !ok || !wr.Created || wr.Err() != nil {
		cancel()
		return nil, nil, nil, fmt.Errorf("pacing watch not created: %v", wr.Err())
	}
	starts = make([]chan struct{}, n)
	for i := range starts {
		starts[i] = make(chan struct{})
	}
	close(starts[0])
	ready = make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		seen := 0
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Kv.Version != 1 {
					continue // not a new key
				}
				if seen++; seen < n {
					close(starts[seen])
				} else if seen == n {
					// Done: the watch ends before the measured
					// time, which its events would count in.
					close(ready)
					cancel()
				}
			}
		}
	}()
	return starts, ready, func() { cancel(); <-done }, nil
}

// runContenders runs one goroutine per locker, all on one lock, from the
// same instant for d, and waits for all of them. A contender still waiting
// at the deadline waits on until it holds the lock and unlocks, so that no
// Lock is cancelled; only grants before the deadline are counted. The first
// error stops every contender and is returned. The requests of every
// client of tally over the measured time go into the sample.
func runContenders(ctx context.Context, ls []locker, d time.Duration, tally *reqTally) (sample, error) {
	return runContendersPaced(ctx, ls, d, tally, nil)
}

// runContendersPaced is runContenders, with p (if not nil) starting the
// contenders one at a time: the measured time then begins once all have
// enqueued, and only grants within it are counted.
func runContendersPaced(ctx context.Context, ls []locker, d time.Duration, tally *reqTally, p *pacer) (sample, error) {
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		// The measured time, in Unix nanoseconds: all of time until it
		// is set (a contender loops until the deadline).
		from, deadline atomic.Int64
		lats           = make([][]time.Duration, len(ls))
		starts         []chan struct{}
		ready          chan struct{}
	)
	from.Store(math.MaxInt64)
	deadline.Store(math.MaxInt64)
	if p != nil {
		var stopPacer func()
		var err error
		if starts, ready, stopPacer, err = p.start(ctx, len(ls)); err != nil {
			return sample{}, err
		}
		defer stopPacer()
	}
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if starts != nil {
				select {
				case <-starts[i]:
				case <-ctx.Done():
					return
				}
			}
			for time.Now().UnixNano() < deadline.Load() {
				t0 := time.Now()
				unlock, err := l.lock(ctx)
				if err != nil {
					stop(fmt.Errorf("contender %d: lock: %w", i, err))
					return
				}
				if held := time.Now(); held.UnixNano() < deadline.Load() && held.UnixNano() >= from.Load() {
					lats[i] = append(lats[i], held.Sub(t0))
				}
				uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
				err = unlock(uctx)
				cancel()
				if err != nil {
					stop(fmt.Errorf("contender %d: unlock: %w", i, err))
					return
				}
			}
		}()
	}
	close(start)
	if ready != nil {
		select {
		case <-ready:
		case <-ctx.Done():
		}
	}
	cpu0, ok0 := processCPU()
	reqs0, wal0 := tally.read(), tally.wal()
	now := time.Now()
	from.Store(now.UnixNano())
	deadline.Store(now.Add(d).UnixNano())
	// The CPU over the measured time: read at the deadline, not after the
	// contenders that still wait have drained.
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	cpu1, ok1 := processCPU()
	reqs, wal := tally.read().sub(reqs0), tally.wal().sub(wal0)
	wg.Wait()
	if ctx.Err() != nil {
		return sample{}, context.Cause(ctx)
	}
	s := sample{elapsed: d, cpu: cpu1 - cpu0, cpuOK: ok0 && ok1, reqs: &reqs, wal: wal, perContender: lats}
	for _, l := range lats {
		s.lat = append(s.lat, l...)
		s.byContender = append(s.byContender, len(l))
	}
	s.ops = len(s.lat)
	return s, nil
}

// etcdlockLocker is a contender using lock.Mutex.
type etcdlockLocker struct {
	cli *clientv3.Client
	m   *lock.Mutex
}

// newEtcdlockLocker makes a contender with its own client and lock.Mutex.
func newEtcdlockLocker(env *benchEnv, ns, name string) (locker, error) {
	cli, err := env.newClient()
	if err != nil {
		return nil, err
	}
	m, err := lock.NewMutex(cli, name, lock.WithNamespace(ns), lock.WithTTL(benchTTL*time.Second))
	if err != nil {
		return nil, errors.Join(err, cmdline.CloseClient(cli)())
	}
	return &etcdlockLocker{cli: cli, m: m}, nil
}

// lock implements locker.
func (l *etcdlockLocker) lock(ctx context.Context) (func(context.Context) error, error) {
	h, err := l.m.Lock(ctx)
	if err != nil {
		return nil, err
	}
	return h.Unlock, nil
}

// close implements locker: it closes the Mutex (revoking its lease) and the
// client.
func (l *etcdlockLocker) close() error {
	return errors.Join(l.m.Close(), cmdline.CloseClient(l.cli)())
}

// concurrencyLocker is a contender using etcd's concurrency.Mutex, with a
// session of its own.
type concurrencyLocker struct {
	cli *clientv3.Client
	s   *concurrency.Session
	m   *concurrency.Mutex
}

// newConcurrencyLocker makes a contender with its own client, session and
// concurrency.Mutex.
func newConcurrencyLocker(env *benchEnv, ns, name string) (locker, error) {
	cli, s, err := env.newSession()
	if err != nil {
		return nil, err
	}
	return &concurrencyLocker{cli: cli, s: s, m: concurrency.NewMutex(s, ns+name)}, nil
}

// lock implements locker.
func (l *concurrencyLocker) lock(ctx context.Context) (func(context.Context) error, error) {
	if err := l.m.Lock(ctx); err != nil {
		return nil, err
	}
	return l.m.Unlock, nil
}

// close implements locker: it closes the session (revoking its lease) and
// the client.
func (l *concurrencyLocker) close() error {
	return errors.Join(l.s.Close(), cmdline.CloseClient(l.cli)())
}
