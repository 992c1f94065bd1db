package lock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/testutil"
	"github.com/etcdlock/etcdlock/lock"
)

// rpcClient returns a new client of the shared server whose calls are
// counted, closed at cleanup.
func (e *env) rpcClient() (*clientv3.Client, *integration.RPCCounter) { return testutil.RPCClient(e.t) }

// acquireOps are every blocking acquire of the three primitives, built on
// cli under e's namespace, with opts.
type acquireOp struct {
	name string
	run  func(ctx context.Context) error
}

func (e *env) acquireOps(cli *clientv3.Client, opts ...lock.Option) []acquireOp {
	m := e.mutex(cli, "m", opts...)
	rw := e.rwmutex(cli, "rw", opts...)
	s := e.semaphore(cli, "s", 3, opts...)
	hold := func(f func(context.Context) (*lock.Hold, error)) func(context.Context) error {
		return func(ctx context.Context) error {
			h, err := f(ctx)
			if h != nil {
				_ = h.Unlock(context.Background())
				return errors.New("granted")
			}
			return err
		}
	}
	fn := func(context.Context, fencing.Token) error { return errors.New("fn ran") }
	return []acquireOp{
		{"Mutex.Lock", hold(m.Lock)},
		{"Mutex.TryLock", hold(m.TryLock)},
		{"Mutex.Do", func(ctx context.Context) error { return m.Do(ctx, fn) }},
		{"RWMutex.RLock", hold(rw.RLock)},
		{"RWMutex.Lock", hold(rw.Lock)},
		{"RWMutex.TryRLock", hold(rw.TryRLock)},
		{"RWMutex.TryLock", hold(rw.TryLock)},
		{"RWMutex.RDo", func(ctx context.Context) error { return rw.RDo(ctx, fn) }},
		{"RWMutex.Do", func(ctx context.Context) error { return rw.Do(ctx, fn) }},
		{"Semaphore.Acquire", hold(func(ctx context.Context) (*lock.Hold, error) { return s.Acquire(ctx, 1) })},
		{"Semaphore.TryAcquire", hold(func(ctx context.Context) (*lock.Hold, error) { return s.TryAcquire(ctx, 2) })},
		{"Semaphore.Do", func(ctx context.Context) error { return s.Do(ctx, 1, fn) }},
		{"Inspect", func(ctx context.Context) error {
			_, err := lock.Inspect(ctx, cli, e.ns, "m")
			return err
		}},
	}
}

// TestBadInputEndedContext: every blocking call given a context that has
// already ended returns its error (context.Cause) at once, asks etcd
// nothing (no lease grant, no enqueue), and leaves no key: on a primitive
// that has no lease yet, on one whose lease is live, and on a session.
func TestBadInputEndedContext(t *testing.T) {
	for _, setup := range []string{"fresh", "lease live", "session"} {
		t.Run(setup, func(t *testing.T) {
			e := newEnv(t)
			cli, calls := e.rpcClient()
			var opts []lock.Option
			if setup == "session" {
				s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(5))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				opts = append(opts, lock.WithSession(s))
			}
			ops := e.acquireOps(cli, opts...)
			if setup == "lease live" {
				// One grant and release each, so that the lease exists.
				for _, op := range ops {
					if op.name == "Inspect" {
						continue
					}
					if err := op.run(ctxT(t, 10*time.Second)); err != nil && err.Error() != "granted" && err.Error() != "fn ran" {
						t.Fatalf("%s: %v", op.name, err)
					}
				}
			}
			for _, op := range ops {
				for _, c := range endedContexts() {
					before := calls.Snapshot()
					err := op.run(c.Ctx)
					if !errors.Is(err, c.Want) {
						t.Errorf("%s with a %s context = %v, want %v", op.name, c.Name, err, c.Want)
					}
					if got := calls.Since(before); got != nil {
						t.Errorf("%s with a %s context asked etcd %v, want nothing", op.name, c.Name, got)
					}
				}
			}
			integration.RequireEmpty(t, e.cli, e.ns)
		})
	}
}

// TestBadInputUseAfterClose: after Close, every acquire returns ErrClosed
// without asking etcd, holds it released answer Unlock with ErrNotHeld, and
// Close, again or concurrently, returns nil.
func TestBadInputUseAfterClose(t *testing.T) {
	e := newEnv(t)
	cli, calls := e.rpcClient()
	opts := []lock.Option{lock.WithNamespace(e.ns), lock.WithTTL(2 * time.Second)}
	m, err := lock.NewMutex(cli, "m", opts...)
	if err != nil {
		t.Fatal(err)
	}
	rw, err := lock.NewRWMutex(cli, "rw", opts...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := lock.NewSemaphore(cli, "s", 2, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	var holds []*lock.Hold
	for _, f := range []func(context.Context) (*lock.Hold, error){
		m.Lock, rw.RLock, func(ctx context.Context) (*lock.Hold, error) { return s.Acquire(ctx, 2) },
	} {
		h, err := f(ctx)
		if err != nil {
			t.Fatal(err)
		}
		holds = append(holds, h)
	}
	closers := []func() error{m.Close, rw.Close, s.Close}
	for _, c := range closers {
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = c() })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("concurrent Close %d = %v, want nil", i, err)
			}
		}
		if err := c(); err != nil {
			t.Errorf("Close again = %v, want nil", err)
		}
	}
	fn := func(context.Context, fencing.Token) error { return errors.New("fn ran") }
	hold := func(_ *lock.Hold, err error) error { return err }
	before := calls.Snapshot()
	for _, c := range []struct {
		name string
		err  error
	}{
		{"Mutex.Lock", hold(m.Lock(ctx))},
		{"Mutex.TryLock", hold(m.TryLock(ctx))},
		{"Mutex.Do", m.Do(ctx, fn)},
		{"RWMutex.RLock", hold(rw.RLock(ctx))},
		{"RWMutex.Lock", hold(rw.Lock(ctx))},
		{"RWMutex.TryRLock", hold(rw.TryRLock(ctx))},
		{"RWMutex.TryLock", hold(rw.TryLock(ctx))},
		{"RWMutex.RDo", rw.RDo(ctx, fn)},
		{"RWMutex.Do", rw.Do(ctx, fn)},
		{"Semaphore.Acquire", hold(s.Acquire(ctx, 1))},
		{"Semaphore.TryAcquire", hold(s.TryAcquire(ctx, 1))},
		{"Semaphore.Do", s.Do(ctx, 1, fn)},
	} {
		if !errors.Is(c.err, lock.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", c.name, c.err)
		}
	}
	if got := calls.Since(before); got != nil {
		t.Errorf("acquires after Close asked etcd %v, want nothing", got)
	}
	for i, h := range holds {
		if err := h.Err(); !errors.Is(err, lock.ErrReleased) {
			t.Errorf("hold %d: Err after Close = %v, want ErrReleased", i, err)
		}
		if err := h.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
			t.Errorf("hold %d: Unlock after Close = %v, want ErrNotHeld", i, err)
		}
	}
	integration.RequireEmpty(t, e.cli, e.ns)
}

// TestBadInputConstructors: every constructor and Inspect refuse the same
// bad arguments with the same errors, without I/O, and accept a name and a
// namespace of exactly the maximum length.
func TestBadInputConstructors(t *testing.T) {
	e := newEnv(t)
	cli, calls := e.rpcClient()
	s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ns := lock.WithNamespace(e.ns)
	cases := []struct {
		name string
		cli  *clientv3.Client
		lock string
		opts []lock.Option
		want error
	}{
		{"nil client", nil, "x", nil, lock.ErrNilClient},
		{"empty name", cli, "", nil, lock.ErrInvalidName},
		{"name over max", cli, strings.Repeat("n", lock.MaxNameLen+1), nil, lock.ErrInvalidName},
		{"name not utf8", cli, "a\xffb", nil, lock.ErrInvalidName},
		{"namespace over max", cli, "x", []lock.Option{lock.WithNamespace(strings.Repeat("n", lock.MaxNamespaceLen+1))}, lock.ErrInvalidNamespace},
		{"namespace not utf8", cli, "x", []lock.Option{lock.WithNamespace("ns\xfe/")}, lock.ErrInvalidNamespace},
		{"zero ttl", cli, "x", []lock.Option{lock.WithTTL(0)}, lock.ErrInvalidOption},
		{"negative ttl", cli, "x", []lock.Option{lock.WithTTL(-5 * time.Second)}, lock.ErrInvalidOption},
		{"sub-second ttl", cli, "x", []lock.Option{lock.WithTTL(999 * time.Millisecond)}, lock.ErrInvalidOption},
		{"fractional ttl", cli, "x", []lock.Option{lock.WithTTL(2500 * time.Millisecond)}, lock.ErrInvalidOption},
		{"huge ttl", cli, "x", []lock.Option{lock.WithTTL(9_000_000_001 * time.Second)}, lock.ErrInvalidOption},
		{"zero margin", cli, "x", []lock.Option{lock.WithSafetyMargin(0)}, lock.ErrInvalidOption},
		{"negative margin", cli, "x", []lock.Option{lock.WithSafetyMargin(-time.Millisecond)}, lock.ErrInvalidOption},
		{"margin half ttl", cli, "x", []lock.Option{lock.WithTTL(4 * time.Second), lock.WithSafetyMargin(2 * time.Second)}, lock.ErrInvalidOption},
		{"margin over ttl", cli, "x", []lock.Option{lock.WithTTL(2 * time.Second), lock.WithSafetyMargin(3 * time.Second)}, lock.ErrInvalidOption},
		{"margin half default ttl", cli, "x", []lock.Option{lock.WithSafetyMargin(lock.DefaultTTL / 2)}, lock.ErrInvalidOption},
		{"session and ttl", cli, "x", []lock.Option{lock.WithSession(s), lock.WithTTL(5 * time.Second)}, lock.ErrInvalidOption},
		{"nil session", cli, "x", []lock.Option{lock.WithSession(nil)}, lock.ErrInvalidOption},
		{"holder over max", cli, "x", []lock.Option{lock.WithHolder(strings.Repeat("h", 4097))}, lock.ErrInvalidOption},
		{"zero option", cli, "x", []lock.Option{nil}, lock.ErrInvalidOption},
	}
	ctors := []struct {
		name string
		make func(*clientv3.Client, string, []lock.Option) (any, error)
	}{
		{"NewMutex", func(c *clientv3.Client, n string, o []lock.Option) (any, error) { return lock.NewMutex(c, n, o...) }},
		{"NewRWMutex", func(c *clientv3.Client, n string, o []lock.Option) (any, error) { return lock.NewRWMutex(c, n, o...) }},
		{"NewSemaphore", func(c *clientv3.Client, n string, o []lock.Option) (any, error) {
			return lock.NewSemaphore(c, n, 2, o...)
		}},
	}
	before := calls.Snapshot()
	for _, c := range cases {
		for _, ctor := range ctors {
			v, err := ctor.make(c.cli, c.lock, append([]lock.Option{ns}, c.opts...))
			if !errors.Is(err, c.want) {
				t.Errorf("%s, %s: error %v, want %v", ctor.name, c.name, err, c.want)
			} else if err != nil && !strings.HasPrefix(err.Error(), "lock: ") {
				t.Errorf("%s, %s: error %q does not say where it comes from", ctor.name, c.name, err)
			}
			switch v := v.(type) {
			case *lock.Mutex:
				if v != nil {
					t.Errorf("%s, %s: non-nil result with an error", ctor.name, c.name)
				}
			case *lock.RWMutex:
				if v != nil {
					t.Errorf("%s, %s: non-nil result with an error", ctor.name, c.name)
				}
			case *lock.Semaphore:
				if v != nil {
					t.Errorf("%s, %s: non-nil result with an error", ctor.name, c.name)
				}
			}
		}
	}
	for _, limit := range []int64{0, -1, lock.MaxSemaphoreLimit + 1} {
		if _, err := lock.NewSemaphore(cli, "x", limit, ns); !errors.Is(err, lock.ErrInvalidOption) {
			t.Errorf("NewSemaphore(limit %d) = %v, want ErrInvalidOption", limit, err)
		}
	}
	if got := calls.Since(before); got != nil {
		t.Errorf("refused constructors asked etcd %v, want nothing", got)
	}

	// At the limits: accepted, and usable.
	longNS := e.ns + strings.Repeat("n", lock.MaxNamespaceLen-len(e.ns)-1) + "/"
	longName := strings.Repeat("é", lock.MaxNameLen/2) // 2 bytes each: exactly MaxNameLen
	if len(longNS) != lock.MaxNamespaceLen || len(longName) != lock.MaxNameLen {
		t.Fatalf("bad test: lengths %d, %d", len(longNS), len(longName))
	}
	m, err := lock.NewMutex(cli, longName, lock.WithNamespace(longNS), lock.WithTTL(2*time.Second),
		lock.WithHolder(strings.Repeat("h", 4096)))
	if err != nil {
		t.Fatalf("NewMutex at the limits: %v", err)
	}
	defer m.Close()
	h := mustLock(t, m)
	if st, err := lock.Inspect(ctxT(t, 5*time.Second), cli, longNS, longName); err != nil ||
		len(st.Lock(lock.KindMutex).Keys) != 1 {
		t.Fatalf("Inspect at the limits = %+v, %v", st, err)
	}
	mustUnlock(t, h)
	sem, err := lock.NewSemaphore(cli, longName, lock.MaxSemaphoreLimit, lock.WithNamespace(longNS), lock.WithTTL(2*time.Second),
		lock.WithHolder(strings.Repeat("h", 4096)))
	if err != nil {
		t.Fatalf("NewSemaphore at the limits: %v", err)
	}
	defer sem.Close()
	sh, err := sem.Acquire(ctxT(t, 10*time.Second), lock.MaxSemaphoreLimit)
	if err != nil {
		t.Fatalf("Acquire(MaxSemaphoreLimit): %v", err)
	}
	mustUnlock(t, sh)
}

// TestBadInputPermits: a bad number of permits is refused with
// ErrInvalidPermits, before any I/O.
func TestBadInputPermits(t *testing.T) {
	e := newEnv(t)
	cli, calls := e.rpcClient()
	s := e.semaphore(cli, "s", 3)
	ctx := ctxT(t, 5*time.Second)
	before := calls.Snapshot()
	for _, k := range []int64{0, -1, -1 << 63, 4, lock.MaxSemaphoreLimit + 1} {
		if _, err := s.Acquire(ctx, k); !errors.Is(err, lock.ErrInvalidPermits) {
			t.Errorf("Acquire(%d) = %v, want ErrInvalidPermits", k, err)
		}
		if _, err := s.TryAcquire(ctx, k); !errors.Is(err, lock.ErrInvalidPermits) {
			t.Errorf("TryAcquire(%d) = %v, want ErrInvalidPermits", k, err)
		}
		if err := s.Do(ctx, k, func(context.Context, fencing.Token) error { return nil }); !errors.Is(err, lock.ErrInvalidPermits) {
			t.Errorf("Do(%d) = %v, want ErrInvalidPermits", k, err)
		}
	}
	if got := calls.Since(before); got != nil {
		t.Errorf("refused acquires asked etcd %v, want nothing", got)
	}
}

// TestBadInputEndedSession: a session that was closed, or whose lease was
// revoked behind its back, makes every acquire fail with
// ErrSessionExpired, leaving no key.
func TestBadInputEndedSession(t *testing.T) {
	for _, how := range []string{"closed", "revoked"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(5))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if how == "closed" {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			} else if _, err := e.cli.Revoke(ctxT(t, 5*time.Second), s.Lease()); err != nil {
				t.Fatal(err)
			}
			for _, op := range e.acquireOps(e.cli, lock.WithSession(s)) {
				if op.name == "Inspect" {
					continue
				}
				if err := op.run(ctxT(t, 10*time.Second)); !errors.Is(err, lock.ErrSessionExpired) {
					t.Errorf("%s on a %s session = %v, want ErrSessionExpired", op.name, how, err)
				}
			}
			integration.RequireEmpty(t, e.cli, e.ns)
		})
	}
}

// TestBadInputUnlockEndedContext: Unlock with an ended context returns its
// error, ends the hold at once, and the key still goes without Close (in
// the background, after the lease's next renewal); Unlock retried, or
// called again after success, says so.
func TestBadInputUnlockEndedContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "m")
	for _, c := range endedContexts() {
		h := mustLock(t, m)
		if err := h.Unlock(c.Ctx); !errors.Is(err, c.Want) {
			t.Errorf("Unlock with a %s context = %v, want %v", c.Name, err, c.Want)
		}
		waitClosed(t, h.Done(), time.Second, "Done after Unlock")
		integration.WaitKeyCount(t, e.cli, m.Prefix(), 0, 10*time.Second)
		if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
			t.Errorf("Unlock retried after a %s context = %v, want nil (the key is gone)", c.Name, err)
		}
		if err := h.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) {
			t.Errorf("Unlock once more = %v, want ErrNotHeld", err)
		}
	}
}

// TestBadInputInspectClosedClient: Inspect on a closed client returns
// ErrClientClosed, not the context.Canceled that clientv3 reports, which
// would read as the caller's context ending.
func TestBadInputInspectClosedClient(t *testing.T) {
	e := newEnv(t)
	cli, _ := e.rpcClient()
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := lock.Inspect(ctxT(t, 5*time.Second), cli, e.ns, "x")
	if !errors.Is(err, lock.ErrClientClosed) || errors.Is(err, context.Canceled) {
		t.Fatalf("Inspect on a closed client = %v, want ErrClientClosed (and not context.Canceled)", err)
	}
}

// TestBadInputNilContext: a nil context is a programming error and panics
// in the caller, as context.WithCancel does, before anything changes: the
// lock still closes, a hold passed nil still unlocks, and no key is left.
func TestBadInputNilContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "m")
	rw := e.rwmutex(e.cli, "rw")
	s := e.semaphore(e.cli, "s", 2)
	h := mustLock(t, m)
	var nilCtx context.Context
	for _, c := range []struct {
		name string
		call func()
	}{
		{"Mutex.Lock", func() { _, _ = m.Lock(nilCtx) }},
		{"Mutex.TryLock", func() { _, _ = m.TryLock(nilCtx) }},
		{"RWMutex.RLock", func() { _, _ = rw.RLock(nilCtx) }},
		{"RWMutex.TryLock", func() { _, _ = rw.TryLock(nilCtx) }},
		{"Semaphore.Acquire", func() { _, _ = s.Acquire(nilCtx, 1) }},
		{"Inspect", func() { _, _ = lock.Inspect(nilCtx, e.cli, e.ns, "m") }},
		{"Hold.Unlock", func() { _ = h.Unlock(nilCtx) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s(nil) did not panic", c.name)
				}
			}()
			c.call()
		}()
	}
	if err := h.Err(); err != nil {
		t.Errorf("hold after Unlock(nil) = %v, want still held", err)
	}
	mustUnlock(t, h)
}
