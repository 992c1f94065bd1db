package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// A hold lost to its deadline while its lease lives on (renewals delayed,
// not lost) must not leave its key blocking the lock: the holder was told it
// lost, and will not unlock.
func TestDeadlineLossDoesNotWedgeLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)
	defer p.Unpause()

	holder := e.mutex(cli, "wedge", lock.WithTTL(4*time.Second), lock.WithSafetyMargin(1900*time.Millisecond))
	h := mustLock(t, holder)
	d0 := h.Deadline()
	for h.Deadline().Equal(d0) { // just after a renewal
		time.Sleep(5 * time.Millisecond)
	}
	p.Pause() // the next renewal is held: delivered late, but before the lease expires
	waitClosed(t, h.Done(), 4*time.Second, "hold lost to its deadline")
	p.Unpause()
	if !errors.Is(h.Err(), lock.ErrDeadline) {
		t.Fatalf("Err = %v, want ErrDeadline", h.Err())
	}
	// The holder does not Unlock. Someone else must get the lock long
	// before the lease (renewed again) would expire.
	other := e.mutex(e.cli, "wedge")
	h2, err := other.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("lock wedged after a deadline loss: %v", err)
	}
	if h2.Token().Revision <= h.Token().Revision {
		t.Fatalf("tokens %v then %v", h.Token(), h2.Token())
	}
	mustUnlock(t, h2)
}

// A Lock waiting for another caller's lease grant still honours its own
// context.
func TestLockHonoursCtxWhileAnotherGrants(t *testing.T) {
	e := newEnv(t)
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	// A client through the proxy that tells when a LeaseGrant is sent: the
	// Mutex grants its lease on the first Lock, after it has marked the
	// grant as in flight, so that later Locks wait for it.
	granting := make(chan struct{}, 1)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            []string{p.Endpoint()},
		DialTimeout:          integration.ClientDialTimeout,
		DialKeepAliveTime:    integration.ClientKeepAliveTime,
		DialKeepAliveTimeout: integration.ClientKeepAliveTimeout,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(
			func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				if method == "/etcdserverpb.Lease/LeaseGrant" {
					select {
					case granting <- struct{}{}:
					default:
					}
				}
				return invoker(ctx, method, req, reply, cc, opts...)
			})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() }) // before the proxy's Close, registered earlier
	m := e.mutex(cli, "grant")
	p.Blackhole()
	defer p.Unblackhole()
	bg, cancelBg := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := m.Lock(bg); first <- err }()
	select {
	case <-granting: // the first Lock is blocked in its Grant, which the proxy drops
	case <-time.After(10 * time.Second):
		t.Fatal("the first Lock sent no LeaseGrant")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := m.Lock(ctx); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("second Lock = %v, want DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Lock ignored its context while another caller granted a lease")
	}
	cancelBg()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first Lock = %v, want Canceled", err)
	}
	p.Unblackhole()
}

// A waiter whose predecessor watch breaks (its member lost the leader)
// reopens it, instead of falling back to polling.
func TestWaiterReopensBrokenWatch(t *testing.T) {
	c := integration.NewCluster(t, 3, integration.WithoutFsync())
	ctx := ctxT(t, 60*time.Second)
	lead, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := (lead + 1) % 3
	wcli, err := c.Members()[f].NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wcli.Close() })
	obs, logs := observer.New(zap.DebugLevel)
	// retried is signalled at every "retrying wait" logged: the waiter's
	// watch broke (or could not be opened) and it will try again.
	retried := make(chan struct{}, 1)
	core := zapcore.RegisterHooks(obs, func(en zapcore.Entry) error {
		if en.Message == "retrying wait" {
			select {
			case retried <- struct{}{}:
			default:
			}
		}
		return nil
	})
	hcli := c.Client(t)
	hm, err := lock.NewMutex(hcli, "blk")
	if err != nil {
		t.Fatal(err)
	}
	defer hm.Close()
	wm, err := lock.NewMutex(wcli, "blk", lock.WithTTL(30*time.Second), lock.WithLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	h, err := hm.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		h2, err := wm.Lock(ctx)
		if err == nil {
			err = h2.Unlock(ctx)
		}
		got <- err
	}()
	waitKeys(t, hcli, hm.Prefix(), 2)
	select {
	case <-retried: // before the cut (the member may have been catching up): not the break
	default:
	}
	srvF := c.Members()[f].EtcdServer()
	if srvF == nil {
		t.Fatalf("member %d not running", f)
	}
	c.Isolate(f)
	// The member loses its leader; its watches (which require one) are
	// cancelled, and the waiter says it retries.
	select {
	case <-retried:
	case <-ctx.Done():
		t.Fatal("the waiter never saw its watch break")
	}
	back := srvF.LeaderChangedNotify()
	c.Heal(f)
	if srvF.Lead() == 0 {
		select {
		case <-back: // the member follows a leader again
		case <-ctx.Done():
			t.Fatal("the healed member found no leader")
		}
	}
	// With a leader back, the waiter's next retry reopens its watches; its
	// backoff is capped at 1s (internal/queue/waiter.go) and no event tells
	// that it has reopened them, so give it that long. Then count retries
	// over a window: that they stopped can only be observed over a time.
	time.Sleep(time.Second)
	n0 := logs.FilterMessage("retrying wait").Len()
	t.Logf("%d wait retries while the member was cut off and recovering", n0)
	time.Sleep(2500 * time.Millisecond)
	if n := logs.FilterMessage("retrying wait").Len() - n0; n > 0 {
		t.Errorf("%d wait retries after the cluster healed: the waiter polls instead of watching", n)
	}
	if err := h.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// A waiter whose client is closed under it stops waiting, for the Mutex
// (per-predecessor watch) and for the RWMutex (shared watch) alike.
func TestWaiterStopsWhenClientCloses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, kind := range []string{"mutex", "rw"} {
		t.Run(kind, func(t *testing.T) {
			holderCli, waiterCli := e.client(), e.client()
			var hold, wait func(context.Context) (*lock.Hold, error)
			switch kind {
			case "mutex":
				hold = e.mutex(holderCli, "closing").Lock
				wait = e.mutex(waiterCli, "closing").Lock
			default:
				a, err := lock.NewRWMutex(holderCli, "closing", lock.WithNamespace(e.ns), lock.WithTTL(2*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				b, err := lock.NewRWMutex(waiterCli, "closing", lock.WithNamespace(e.ns), lock.WithTTL(2*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { b.Close(); a.Close() })
				hold, wait = a.Lock, b.RLock
			}
			h, err := hold(ctxT(t, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := wait(context.Background()); done <- err }()
			waitKeys(t, e.cli, e.ns, 2)
			waiterCli.Close()
			closed := time.Now()
			select {
			case err := <-done:
				t.Logf("waiter returned %v after %v", err, time.Since(closed))
				if err == nil {
					t.Fatal("waiter granted after its client closed")
				}
				if !errors.Is(err, lock.ErrClientClosed) || errors.Is(err, context.Canceled) {
					t.Fatalf("waiter returned %v, want ErrClientClosed (and not context.Canceled: the caller's context is alive)", err)
				}
			case <-time.After(8 * time.Second): // the lease TTL is 2s
				t.Fatal("waiter still blocked after its client was closed")
			}
			mustUnlock(t, h)
			waitKeys(t, e.cli, e.ns, 0) // the waiter's key went with its lease
		})
	}
}

// An enqueue that finds a key already under its name (written by someone
// else: etcdlock's own failed enqueues never reuse a name) must treat it as
// a stray: never adopt its older create revision as its token, have it
// deleted, and take another key. Both the waiting and the try path.
func TestEnqueueOverStrayKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "stray", lock.WithTTL(time.Second))
	for _, try := range []bool{false, true} {
		h := mustLock(t, m)
		key, leaseID := h.Token().Key, h.Lease()
		mustUnlock(t, h) // the key's name is reused by the next enqueue
		put, err := e.cli.Put(ctxT(t, 5*time.Second), key, "late", clientv3.WithLease(leaseID))
		if err != nil {
			t.Fatal(err)
		}
		var h2 *lock.Hold
		if try {
			// TryLock takes another key; the stray, older, makes it fail
			// (leaving nothing of its own) unless the stray was deleted
			// first, and then it holds.
			h2, err = m.TryLock(ctxT(t, 5*time.Second))
			switch {
			case errors.Is(err, lock.ErrLocked):
				integration.WaitKeyCount(t, e.cli, e.ns, 0, 5*time.Second) // the stray is deleted
				h2 = mustLock(t, m)
			case err != nil:
				t.Fatalf("TryLock over a stray = %v, want ErrLocked or a hold", err)
			}
		} else {
			h2, err = m.Lock(ctxT(t, 10*time.Second)) // waits for the stray's deletion
			if err != nil {
				t.Fatal(err)
			}
		}
		if h2.Token().Revision <= put.Header.Revision {
			t.Fatalf("try=%v: token %v not newer than the stray (rev %d)", try, h2.Token(), put.Header.Revision)
		}
		resp, err := e.cli.Get(ctxT(t, 5*time.Second), key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 0 && resp.Kvs[0].CreateRevision == put.Header.Revision {
			t.Fatalf("try=%v: the stray is still there while %v holds", try, h2.Token())
		}
		mustUnlock(t, h2)
	}
}

// Two sessions on one lease (concurrency.WithLease) are two owners of its
// renewals: the end of one (orphaned, here) must not end the holds made
// through the other while the lease lives on.
func TestSessionsSharingALeaseEndApart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	lg, err := e.cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	defer e.cli.Revoke(context.Background(), lg.ID)
	s1, err := concurrency.NewSession(e.cli, concurrency.WithLease(lg.ID))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := concurrency.NewSession(e.cli, concurrency.WithLease(lg.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m1 := e.mutex(e.cli, "one", lock.WithSession(s1))
	m2 := e.mutex(e.cli, "two", lock.WithSession(s2))
	h1 := mustLock(t, m1)
	h2 := mustLock(t, m2)
	s1.Orphan() // s1 stops renewing; the lease lives on through s2
	waitClosed(t, h1.Done(), 10*time.Second, "hold through the orphaned session")
	if !errors.Is(h1.Err(), lock.ErrSessionExpired) {
		t.Fatalf("hold through the orphaned session: Err = %v, want ErrSessionExpired", h1.Err())
	}
	if err := h2.Err(); err != nil {
		t.Fatalf("hold through the live session lost with its sibling: %v", err)
	}
	if err := h2.Unlock(ctx); err != nil {
		t.Fatalf("Unlock through the live session: %v", err)
	}
	h3 := mustLock(t, m2) // a new hold through the live session
	if err := h3.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Lock(ctx); !errors.Is(err, lock.ErrSessionExpired) {
		t.Fatalf("Lock through the orphaned session: %v, want ErrSessionExpired", err)
	}
}

// With its etcd client closed, a lock's calls fail with ErrClientClosed,
// not context.Canceled (which the client reports, and which would read as
// the caller's own context ending), and a hold's Unlock says so too.
func TestClientClosedIsMatchable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	m := e.mutex(cli, "closed")
	h := mustLock(t, m)
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, lock.ErrClientClosed) || errors.Is(err, context.Canceled) {
			t.Errorf("%s with the client closed: %v, want ErrClientClosed and not context.Canceled", what, err)
		}
	}
	err := h.Unlock(ctx)
	check("Unlock", err)
	_, err = m.Lock(ctx)
	check("Lock", err)
	_, err = m.TryLock(ctx)
	check("TryLock", err)
	rw := e.rwmutex(cli, "closed-rw")
	_, err = rw.RLock(ctx)
	check("RLock", err)
	waitKeys(t, e.cli, e.ns, 0) // the hold's key went with its lease
}
