package lock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/lock"
)

// rwmutex returns an RWMutex closed at cleanup, with a 2s TTL unless the
// options give a session.
func (e *env) rwmutex(cli *clientv3.Client, name string, opts ...lock.Option) *lock.RWMutex {
	e.t.Helper()
	base := []lock.Option{lock.WithNamespace(e.ns), lock.WithLogger(zaptest.NewLogger(e.t))}
	if len(opts) == 0 {
		base = append(base, lock.WithTTL(2*time.Second))
	}
	m, err := lock.NewRWMutex(cli, name, append(base, opts...)...)
	if err != nil {
		e.t.Fatalf("NewRWMutex: %v", err)
	}
	e.t.Cleanup(func() {
		if err := m.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
	return m
}

// countingClient returns a new client whose KV requests are counted, to
// check how many round trips a waiter makes.
func (e *env) countingClient() (*clientv3.Client, *countingKV) {
	cli := e.client()
	c := &countingKV{KV: cli.KV}
	cli.KV = c
	return cli, c
}

type countingKV struct {
	clientv3.KV
	n atomic.Int64
}

func (c *countingKV) Txn(ctx context.Context) clientv3.Txn {
	c.n.Add(1)
	return c.KV.Txn(ctx)
}

func (c *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.n.Add(1)
	return c.KV.Get(ctx, key, opts...)
}

func (c *countingKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	c.n.Add(1)
	return c.KV.Do(ctx, op)
}

// pendingHold is an acquire running in its own goroutine.
type pendingHold struct {
	done chan struct{}
	h    *lock.Hold
	err  error
}

func goAcquire(f func() (*lock.Hold, error)) *pendingHold {
	p := &pendingHold{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.h, p.err = f()
	}()
	return p
}

// stillWaiting fails t if p already returned.
func stillWaiting(t *testing.T, p *pendingHold, what string) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("%s returned while it should wait: %v, %v", what, p.h, p.err)
	default:
	}
}

// grantedHold waits for p and returns its hold, failing t on error.
func grantedHold(t *testing.T, p *pendingHold, what string) *lock.Hold {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not granted within 10s", what)
	}
	if p.err != nil {
		t.Fatalf("%s: %v", what, p.err)
	}
	return p.h
}

// failedAcquire waits for p and returns its error, failing t if it was granted.
func failedAcquire(t *testing.T, p *pendingHold, what string) error {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: did not return within 10s", what)
	}
	if p.err == nil {
		t.Fatalf("%s: granted, want an error", what)
	}
	return p.err
}

func mustRLock(t *testing.T, m *lock.RWMutex) *lock.Hold {
	t.Helper()
	h, err := m.RLock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("RLock: %v", err)
	}
	return h
}

func mustWLock(t *testing.T, m *lock.RWMutex) *lock.Hold {
	t.Helper()
	h, err := m.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	return h
}

func TestRWWriterWaitsForReadersAhead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.rwmutex(e.cli, "wr")
	r1, r2 := mustRLock(t, m), mustRLock(t, m) // readers share
	wm := e.rwmutex(e.client(), "wr")
	w := goAcquire(func() (*lock.Hold, error) { return wm.Lock(ctxT(t, 30*time.Second)) })
	waitKeys(t, e.cli, m.Prefix(), 3)
	stillWaiting(t, w, "writer behind two readers")
	// Writer-fair: a reader asking after the writer does not overtake it.
	if _, err := m.TryRLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryRLock behind a queued writer = %v, want ErrLocked", err)
	}
	if _, err := m.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock with readers in = %v, want ErrLocked", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 3) // the failed tries left nothing
	mustUnlock(t, r2)
	stillWaiting(t, w, "writer behind one reader")
	mustUnlock(t, r1)
	wh := grantedHold(t, w, "writer")
	if !wh.Token().Newer(r1.Token()) || !wh.Token().Newer(r2.Token()) {
		t.Fatalf("writer token %v not above readers' %v, %v", wh.Token(), r1.Token(), r2.Token())
	}
	mustUnlock(t, wh)
}

func TestRWReaderWaitsForWriterAhead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.rwmutex(e.cli, "rw")
	w := mustWLock(t, m)
	rm := e.rwmutex(e.client(), "rw")
	r := goAcquire(func() (*lock.Hold, error) { return rm.RLock(ctxT(t, 30*time.Second)) })
	waitKeys(t, e.cli, m.Prefix(), 2)
	stillWaiting(t, r, "reader behind a writer")
	if _, err := rm.TryRLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryRLock while a writer holds = %v, want ErrLocked", err)
	}
	mustUnlock(t, w)
	rh := grantedHold(t, r, "reader")
	if !rh.Token().Newer(w.Token()) {
		t.Fatalf("reader token %v not above writer's %v", rh.Token(), w.Token())
	}
	// A reader holds, nobody queued: more readers get in at once.
	r2, err := m.TryRLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("TryRLock beside a reader: %v", err)
	}
	mustUnlock(t, rh)
	mustUnlock(t, r2)
}

// TestRWReadersBehindWriterHoldTogether queues r0 (holding), w1, five
// readers, w2 and r6. When w1 unlocks, the five readers must all hold at
// once, while w2 and r6 keep waiting. Each of the five makes at most four
// round trips in all: the enqueue, possibly one read after opening its
// watches, one read when w1's delete wakes it, and a spare for a
// serializable read that found the member behind the watch. A waiter that
// re-read on every change of the queue would make at least eight.
func TestRWReadersBehindWriterHoldTogether(t *testing.T) {
	e := newEnv(t)
	m := e.rwmutex(e.cli, "together")
	ctx := ctxT(t, 30*time.Second)
	r0 := mustRLock(t, m)
	w1 := goAcquire(func() (*lock.Hold, error) { return m.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 2)
	const n = 5
	var (
		readers [n]*pendingHold
		counts  [n]*countingKV
	)
	for i := range n {
		cli, c := e.countingClient()
		rm := e.rwmutex(cli, "together")
		counts[i] = c
		readers[i] = goAcquire(func() (*lock.Hold, error) { return rm.RLock(ctx) })
		waitKeys(t, e.cli, m.Prefix(), int64(3+i))
	}
	w2 := goAcquire(func() (*lock.Hold, error) { return m.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 3+n)
	r6 := goAcquire(func() (*lock.Hold, error) { return m.RLock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 4+n)

	stillWaiting(t, w1, "w1")
	mustUnlock(t, r0)
	w1h := grantedHold(t, w1, "w1")
	for i, r := range readers {
		stillWaiting(t, r, fmt.Sprintf("reader %d while w1 holds", i))
	}
	mustUnlock(t, w1h)
	var holds [n]*lock.Hold
	for i, r := range readers {
		holds[i] = grantedHold(t, r, fmt.Sprintf("reader %d", i))
	}
	for i, h := range holds { // all granted, none unlocked: they hold together
		if h.Err() != nil {
			t.Fatalf("reader %d: %v", i, h.Err())
		}
		if !h.Token().Newer(w1h.Token()) {
			t.Fatalf("reader %d token %v not above w1's %v", i, h.Token(), w1h.Token())
		}
		if c := counts[i].n.Load(); c > 4 {
			t.Errorf("reader %d made %d round trips, want at most 4", i, c)
		}
	}
	stillWaiting(t, w2, "w2 while readers hold")
	stillWaiting(t, r6, "r6 behind w2")
	for _, h := range holds {
		mustUnlock(t, h)
	}
	w2h := grantedHold(t, w2, "w2")
	stillWaiting(t, r6, "r6 while w2 holds")
	mustUnlock(t, w2h)
	mustUnlock(t, grantedHold(t, r6, "r6"))
}

// TestRWNeverWriterWithOthers runs 16 workers on two clients, 50 rounds each
// of a random RLock, Lock, TryRLock or TryLock, and checks that a writer
// always holds alone and that tokens rise as RWMutex documents: a writer's
// above every token before it, a reader's above every writer's before it.
// An RWFence must admit every access.
func TestRWNeverWriterWithOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const workers, rounds = 16, 50
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	var (
		readers, writers atomic.Int32
		maxReaders       atomic.Int32
		fence            fencing.RWFence
		mu               sync.Mutex
		maxAll, maxWrite int64
		wg               sync.WaitGroup
	)
	other := e.client()
	for i := range workers {
		cli := e.cli
		if i%2 == 1 {
			cli = other
		}
		m := e.rwmutex(cli, "mx")
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() {
			for range rounds {
				write, try := rng.IntN(3) == 0, rng.IntN(4) == 0
				ctx := ctxT(t, 60*time.Second)
				var (
					h   *lock.Hold
					err error
				)
				switch {
				case write && try:
					h, err = m.TryLock(ctx)
				case write:
					h, err = m.Lock(ctx)
				case try:
					h, err = m.TryRLock(ctx)
				default:
					h, err = m.RLock(ctx)
				}
				if try && errors.Is(err, lock.ErrLocked) {
					continue
				}
				if err != nil {
					t.Errorf("acquire (write %v): %v", write, err)
					return
				}
				tok := h.Token()
				if write {
					if n := writers.Add(1); n != 1 {
						t.Errorf("%d writers at once", n)
					}
					if n := readers.Load(); n != 0 {
						t.Errorf("writer with %d readers", n)
					}
					if err := fence.AdmitWrite("res", tok); err != nil {
						t.Errorf("fence refused a current writer: %v", err)
					}
					mu.Lock()
					if tok.Revision <= maxAll {
						t.Errorf("writer token %d not above %d", tok.Revision, maxAll)
					}
					maxAll, maxWrite = tok.Revision, tok.Revision
					mu.Unlock()
					writers.Add(-1)
				} else {
					n := readers.Add(1)
					for old := maxReaders.Load(); n > old && !maxReaders.CompareAndSwap(old, n); old = maxReaders.Load() {
					}
					time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond) // a read
					if n := writers.Load(); n != 0 {
						t.Errorf("reader with %d writers", n)
					}
					if err := fence.AdmitRead("res", tok); err != nil {
						t.Errorf("fence refused a current reader: %v", err)
					}
					mu.Lock()
					if tok.Revision <= maxWrite {
						t.Errorf("reader token %d not above writer token %d", tok.Revision, maxWrite)
					}
					maxAll = max(maxAll, tok.Revision)
					mu.Unlock()
					readers.Add(-1)
				}
				if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
					t.Errorf("Unlock: %v", err)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("at most %d readers held at once", maxReaders.Load())
}

func TestRWTokensRise(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.rwmutex(e.cli, "tok"), e.rwmutex(e.client(), "tok")
	var last int64
	for i := range 8 {
		m := a
		if i%3 == 1 {
			m = b
		}
		var h *lock.Hold
		if i%2 == 0 {
			h = mustRLock(t, m)
		} else {
			h = mustWLock(t, m)
		}
		if h.Token().Revision <= last {
			t.Fatalf("token %v not above the previous %d", h.Token(), last)
		}
		last = h.Token().Revision
		mustUnlock(t, h)
	}
}

func TestRWDo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.rwmutex(e.cli, "do")
	ctx := ctxT(t, 10*time.Second)
	err := m.Do(ctx, func(ctx context.Context, tok fencing.Token) error {
		if _, err := m.TryRLock(ctx); !errors.Is(err, lock.ErrLocked) {
			return fmt.Errorf("TryRLock inside Do = %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = m.RDo(ctx, func(ctx context.Context, tok fencing.Token) error {
		if _, err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
			return fmt.Errorf("TryLock inside RDo = %v", err)
		}
		h, err := m.TryRLock(ctx)
		if err != nil {
			return fmt.Errorf("TryRLock inside RDo = %v", err)
		}
		return h.Unlock(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = m.RDo(ctx, func(ctx context.Context, tok fencing.Token) error {
		if _, err := e.cli.Delete(ctx, tok.Key); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	})
	if !errors.Is(err, lock.ErrLost) {
		t.Fatalf("RDo with its key deleted = %v, want ErrLost", err)
	}
}
