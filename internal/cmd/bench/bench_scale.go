package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/lock"
)

// The scale rows (--scale): how the primitives hold up with many
// contenders or many holds.
//
//   - put serial: the floor, as in the default run;
//   - lock.Mutex with 32 and 1,000 contenders (or mutexRows): CPU per
//     handoff should not grow with the queue;
//   - lock.RWMutex with 1 writer and 8, 64 and 256 readers looping with
//     empty critical sections: CPU per hold, and the writer's wait;
//   - lock.RWMutex with 256 idle readers (each took a read hold once, and
//     keeps its RWMutex open) and 1 writer looping: the writer's wait;
//   - lock.Semaphore of 4 permits with 16, 64 and 256 clients;
//   - 10,000 lock.Mutex holds on one session: heap and goroutines per live
//     hold, and that Close gives them all back.
//
// Every contended row also gives the watch events the server sent per
// hold (each hold is one release): the embedded server's own
// etcd_debugging_mvcc_events_total, read at the start and the end of the
// measured time, as the CPU is.
func scalePlan(mutexRows []int) []group {
	put := &cell{impl: "put", scenario: "put", contenders: 1, measures: measuresPut, serial: serialPut}
	plan := []group{{interleaved: true, cells: []*cell{put}}}
	for _, n := range mutexRows {
		plan = append(plan, group{cells: []*cell{contended(etcdlockImpl, n, nil)}})
	}
	for _, r := range []int{8, 64, 256} {
		plan = append(plan, group{cells: []*cell{contendedWith("etcdlock-rw", "readers", r+1, newRWLocker(r), nil)}})
	}
	plan = append(plan, group{cells: []*cell{idleReaders(256)}})
	for _, n := range []int{16, 64, 256} {
		plan = append(plan, group{cells: []*cell{contendedWith("etcdlock-sem", "contended", n, newSemLocker(4), nil)}})
	}
	return append(plan, group{cells: []*cell{manyHolds(10_000)}})
}

// eventsMetric is the embedded server's count of watch events it sent.
const eventsMetric = "etcd_debugging_mvcc_events_total"

// fsyncsMetric is the embedded server's histogram of its WAL fsyncs.
const fsyncsMetric = "etcd_disk_wal_fsync_duration_seconds"

// serverEvents reads eventsMetric from this process's Prometheus registry,
// where the embedded etcd registers its metrics; -1 if it is not there.
func serverEvents() int64 {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == eventsMetric && len(mf.GetMetric()) > 0 {
			return int64(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return -1
}

// serverFsyncs reads the count and the sum of fsyncsMetric as serverEvents
// reads its metric; -1 if it is not there.
func serverFsyncs() (int64, time.Duration) {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return -1, 0
	}
	for _, mf := range mfs {
		if mf.GetName() == fsyncsMetric && len(mf.GetMetric()) > 0 {
			h := mf.GetMetric()[0].GetHistogram()
			return int64(h.GetSampleCount()), time.Duration(h.GetSampleSum() * float64(time.Second))
		}
	}
	return -1, 0
}

// scaleFigures are the scale rows' own columns; each is absent where it
// does not apply (or, for the events, with --endpoints).
type scaleFigures struct {
	// EventsPerOp is the watch events the server sent per operation (per
	// release, for the lock rows), median over rounds.
	EventsPerOp *float64 `json:"watch_events_per_op,omitempty"`
	// FsyncsPerOp is the server's WAL fsyncs per operation (each fsync
	// makes one batch of raft entries durable), and WALBusy the part of
	// the measured time it spent in them (raft's loop waits for each):
	// medians over rounds, for the contended and put serial rows.
	FsyncsPerOp *float64 `json:"wal_fsyncs_per_op,omitempty"`
	WALBusy     *float64 `json:"wal_busy,omitempty"`
	// WriterP50Ms is, for the readers rows, the writer's median wait.
	WriterP50Ms *float64 `json:"writer_p50_ms,omitempty"`
	// HeapPerHold and GoroutinesPerHold are, for the holds row, the heap
	// bytes and goroutines each live hold adds to the process (server
	// included), Mutex and all.
	HeapPerHold       *float64 `json:"heap_bytes_per_hold,omitempty"`
	GoroutinesPerHold *float64 `json:"goroutines_per_hold,omitempty"`
}

// summarizeScale returns the scale figures of cell c from its samples.
func summarizeScale(c *cell, ss []sample) scaleFigures {
	var (
		f                               scaleFigures
		ev, fs, busy, wp50, heap, gorou []float64
	)
	for _, s := range ss {
		if s.reqs != nil && s.reqs.events >= 0 && s.ops > 0 {
			ev = append(ev, float64(s.reqs.events)/float64(s.ops))
		}
		if s.wal.ok && s.ops > 0 && s.elapsed > 0 {
			fs = append(fs, float64(s.wal.fsyncs)/float64(s.ops))
			busy = append(busy, float64(s.wal.time)/float64(s.elapsed))
		}
		if c.impl == "etcdlock-rw" && len(s.perContender) > 0 && (c.scenario == "idle-readers" || c.scenario == "readers" && len(s.perContender) > 1) {
			wp50 = append(wp50, ms(percentile(s.perContender[len(s.perContender)-1], 50)))
		}
		if c.scenario == "holds" {
			heap, gorou = append(heap, s.heapPerHold), append(gorou, s.goroutinesPerHold)
		}
	}
	set := func(xs []float64) *float64 {
		if len(xs) == 0 || len(xs) != len(ss) {
			return nil
		}
		m := median(xs)
		return &m
	}
	f.WALBusy = set(busy)
	f.EventsPerOp, f.FsyncsPerOp, f.WriterP50Ms, f.HeapPerHold, f.GoroutinesPerHold = set(ev), set(fs), set(wp50), set(heap), set(gorou)
	return f
}

// measuresIdleReaders says what the idle-readers row measures.
const measuresIdleReaders = "one write hold by the one writer looping, beside readers that each took a read hold once and stay open; latency is the wait for the hold"

// idleReaders returns the cell of one writer looping on a lock.RWMutex
// that n readers, each with its own client, opened and read-locked once
// before the measured time, and keep open (idle) through it.
func idleReaders(n int) *cell {
	c := &cell{impl: "etcdlock-rw", scenario: "idle-readers", contenders: n + 1, measures: measuresIdleReaders}
	c.measure = func(ctx context.Context, env *benchEnv, ns string, d time.Duration) (s sample, err error) {
		ls := make([]locker, 0, n+1)
		defer func() {
			for _, l := range ls {
				err = errors.Join(err, l.close())
			}
		}()
		ctx, cancel := context.WithTimeout(ctx, d+cellSlack)
		defer cancel()
		mk := newRWLocker(n)
		for i := range n + 1 {
			l, err := mk(env, ns, i)
			if err != nil {
				return s, err
			}
			ls = append(ls, l)
			if err := cycle(ctx, l); err != nil { // warm-up: lease, connection, watches
				return s, err
			}
		}
		return runContenders(ctx, ls[n:], d, &env.tally)
	}
	return c
}

// measuresHolds says what the holds row measures.
const measuresHolds = "one Lock of its own lock.Mutex on a shared session, 16 at a time, all held at once; latency of the Lock"

// holdsSettle is how long the holds row waits after the last Lock before
// reading the heap and goroutines, so that anything a hold starts late is
// counted.
const holdsSettle = 200 * time.Millisecond

// manyHolds returns the cell of n holds of n lock.Mutexes on one session
// of one client, all held at once.
func manyHolds(n int) *cell {
	c := &cell{impl: "etcdlock", scenario: "holds", contenders: n, measures: measuresHolds}
	c.measure = func(ctx context.Context, env *benchEnv, ns string, _ time.Duration) (s sample, err error) {
		cli, err := env.newClient()
		if err != nil {
			return s, err
		}
		defer func() { err = errors.Join(err, cmdline.CloseClient(cli)()) }()
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(benchTTL))
		if err != nil {
			return s, err
		}
		defer func() { err = errors.Join(err, sess.Close()) }()
		heap0, g0 := heapAndGoroutines()
		ms := make([]*lock.Mutex, n)
		defer func() {
			// Close every Mutex (releasing its hold), 16 at a time, then
			// check that the holds gave back their goroutines.
			err = errors.Join(err, inParallel(n, func(i int) error {
				if ms[i] == nil {
					return nil
				}
				return ms[i].Close()
			}))
			if err == nil {
				err = goroutinesBackTo(g0)
			}
		}()
		lat := make([]time.Duration, n)
		cpu0, ok0 := processCPU()
		t0 := time.Now()
		err = inParallel(n, func(i int) error {
			m, err := lock.NewMutex(cli, "h"+strconv.Itoa(i), lock.WithNamespace(ns), lock.WithSession(sess))
			if err != nil {
				return err
			}
			ms[i] = m
			t := time.Now()
			if _, err := m.Lock(ctx); err != nil {
				return err
			}
			lat[i] = time.Since(t)
			return nil
		})
		elapsed := time.Since(t0)
		cpu1, ok1 := processCPU()
		if err != nil {
			return s, err
		}
		time.Sleep(holdsSettle)
		heap1, g1 := heapAndGoroutines()
		return sample{
			ops: n, elapsed: elapsed, cpu: cpu1 - cpu0, cpuOK: ok0 && ok1, lat: lat,
			heapPerHold:       float64(int64(heap1)-int64(heap0)) / float64(n),
			goroutinesPerHold: float64(g1-g0) / float64(n),
		}, nil
	}
	return c
}

// inParallel runs fn(0..n-1), 16 at a time, and returns the errors joined.
func inParallel(n int, fn func(i int) error) error {
	const workers = 16
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// heapAndGoroutines returns the live heap, after a collection, and the
// number of goroutines.
func heapAndGoroutines() (uint64, int) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, runtime.NumGoroutine()
}

// goroutinesBackTo waits up to cleanupTimeout for the goroutines to be no
// more than g0 (plus a few of the runtime's and the client's).
func goroutinesBackTo(g0 int) error {
	const slack = 8
	deadline := time.Now().Add(cleanupTimeout)
	for {
		g := runtime.NumGoroutine()
		if g <= g0+slack {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d goroutines left after Close, %d before the holds", g, g0)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// printScaleTable writes the human form of the scale rows.
func printScaleTable(w io.Writer, cfg benchConfig, info benchInfo, rows []row) {
	model := info.cpuModel
	if model == "" {
		model = "unknown CPU"
	}
	fmt.Fprintf(w, "machine: %d CPUs, %s/%s, %s\n", info.cpus, info.goos, info.arch, model)
	fmt.Fprintf(w, "etcd:    %s, %s\n", info.etcdVersion, serverDesc(cfg))
	fmt.Fprintf(w, "cells:   %v each, %d round(s), figures medians\n\n", cfg.duration, cfg.rounds)
	opt := func(v *float64, format string) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf(format, *v)
	}
	cells := [][]string{{"impl", "scenario", "contenders", "ops/s", "p50 ms", "p99 ms", "cores", "cpu us/op", "reads/op", "creates/op", "events/op", "writer p50 ms", "heap B/hold", "goroutines/hold"}}
	for _, r := range rows {
		cells = append(cells, []string{r.Impl, r.Scenario, strconv.Itoa(r.Contenders),
			fmt.Sprintf("%.0f", r.OpsPerSec), fmt.Sprintf("%.2f", r.P50Ms), fmt.Sprintf("%.2f", r.P99Ms),
			opt(r.CPUCores, "%.2f"), opt(r.CPUPerOpUs, "%.0f"), opt(r.ReadsPerOp, "%.2f"), opt(r.WatchCreatesPerOp, "%.2f"), opt(r.EventsPerOp, "%.2f"),
			opt(r.WriterP50Ms, "%.2f"), opt(r.HeapPerHold, "%.0f"), opt(r.GoroutinesPerHold, "%.3f")})
	}
	writeTable(w, cells, []bool{false, false, true, true, true, true, true, true, true, true, true, true, true, true})
	fmt.Fprint(w, "\ncontended, readers: one hold (one release); p50/p99 the wait for it.\n")
	fmt.Fprint(w, "  readers: N-1 readers and one writer, empty critical sections.\n")
	fmt.Fprint(w, "  idle-readers: N-1 readers that each read-locked once and stay open, and\n")
	fmt.Fprint(w, "  one writer looping; ops and latency are the writer's.\n")
	fmt.Fprint(w, "reads/op, creates/op: reads (Ranges, read-only Txns) and watch creates per hold.\n")
	fmt.Fprint(w, "events/op: watch events the server sent per operation (its own\n")
	fmt.Fprint(w, "  "+eventsMetric+").\n")
	fmt.Fprint(w, "holds: N lock.Mutexes locked on one session and held together; heap and\n")
	fmt.Fprint(w, "  goroutines each live hold adds to the process (server included).\n")
}
