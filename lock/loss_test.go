package lock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// TestLossBeforeServerExpiry cuts the holder off from etcd, so its renewals
// stop. The hold must be reported lost before the server expires the lease
// and deletes the key, and so before anyone else can be granted the lock.
func TestLossBeforeServerExpiry(t *testing.T) {
	e := newEnv(t)
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)
	defer p.Unblackhole() // before the deferred Close and the Mutex's cleanup

	const ttl = 2 * time.Second
	holder := e.mutex(cli, "cut", lock.WithTTL(ttl))
	h := mustLock(t, holder)
	start := time.Now()

	del := e.cli.Watch(ctxT(t, 10*time.Second), h.Token().Key, clientv3.WithRev(h.Token().Revision+1), clientv3.WithFilterPut())
	next := e.mutex(e.cli, "cut")
	granted := make(chan *lock.Hold, 1)
	go func() {
		h2, err := next.Lock(ctxT(t, 10*time.Second))
		if err != nil {
			t.Errorf("next Lock: %v", err)
		}
		granted <- h2
	}()
	waitKeys(t, e.cli, holder.Prefix(), 2)
	p.Blackhole()

	var order []string
	done := h.Done()
	for len(order) < 3 {
		select {
		case <-done:
			order = append(order, "holder told")
			done = nil
		case wr := <-del:
			if len(wr.Events) > 0 {
				order = append(order, "server deleted key")
				del = nil
			}
		case h2 := <-granted:
			order = append(order, "next granted")
			granted = nil
			if h2 != nil {
				defer mustUnlock(t, h2)
			}
		case <-time.After(3 * ttl): // bound: the server expires the lease after ~TTL
			t.Fatalf("after %v only %v", time.Since(start), order)
		}
	}
	if order[0] != "holder told" {
		t.Fatalf("order of events: %v; the holder must be told first", order)
	}
	if !errors.Is(h.Err(), lock.ErrDeadline) {
		t.Fatalf("Err = %v, want ErrDeadline", h.Err())
	}
	t.Logf("events: %v; holder told after %v", order, time.Since(start))
	p.Unblackhole()
	// The connection broke under the blackhole: Unlock may fail with a
	// transport error until the client reconnects, and is safe to retry.
	ctx := ctxT(t, 10*time.Second)
	for {
		err := h.Unlock(ctx)
		if errors.Is(err, lock.ErrNotHeld) {
			break
		}
		if err == nil || ctx.Err() != nil {
			t.Fatalf("Unlock after loss = %v, want ErrNotHeld", err)
		}
	}
}

// TestDeadlineMovesWithRenewals checks that renewals push the conservative
// deadline forward, from the send time of each renewal.
func TestDeadlineMovesWithRenewals(t *testing.T) {
	e := newEnv(t)
	const ttl = 3 * time.Second
	m := e.mutex(e.cli, "renew", lock.WithTTL(ttl))
	before := time.Now()
	h := mustLock(t, m)
	d0 := h.Deadline()
	if !d0.After(before) || d0.After(before.Add(ttl)) {
		t.Fatalf("first deadline %v not within (now, now+TTL]", d0.Sub(before))
	}
	// Wait for one renewal (every TTL/3) to move the deadline.
	ctx := ctxT(t, 2*ttl)
	for h.Deadline().Equal(d0) {
		select {
		case <-ctx.Done():
			t.Fatal("deadline never moved")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if d1 := h.Deadline(); !d1.After(d0) || d1.After(time.Now().Add(ttl)) {
		t.Fatalf("renewed deadline %v not in (%v, now+TTL]", d1, d0)
	}
	if h.Err() != nil {
		t.Fatal(h.Err())
	}
	mustUnlock(t, h)
}

// TestDeletedKeyToldWithoutAsking: a hold whose key is deleted by another
// client is told at once, without first asking etcd why (a TimeToLive):
// the next waiter is granted on the same delete, and a slow or unreachable
// etcd would otherwise keep the old holder unaware for a round trip or a
// timeout. Here every TimeToLive of the holder's client blocks, and the
// holder must still be told.
func TestDeletedKeyToldWithoutAsking(t *testing.T) {
	e := newEnv(t)
	srv := integration.Shared(t)
	asked := make(chan struct{}, 1)
	block := make(chan struct{})
	t.Cleanup(func() { close(block) }) // before the client's Close, which waits for calls
	cli, err := srv.NewClient(func(c *clientv3.Config) {
		c.DialOptions = append(c.DialOptions, grpc.WithChainUnaryInterceptor(
			func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				if method == "/etcdserverpb.Lease/LeaseTimeToLive" {
					select {
					case asked <- struct{}{}:
					default:
					}
					select {
					case <-block:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return invoker(ctx, method, req, reply, cc, opts...)
			}))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	kinds := map[string]func(c *clientv3.Client) func(context.Context) (*lock.Hold, error){
		"mutex": func(c *clientv3.Client) func(context.Context) (*lock.Hold, error) {
			return e.mutex(c, "told").Lock
		},
		"semaphore": func(c *clientv3.Client) func(context.Context) (*lock.Hold, error) {
			s, err := lock.NewSemaphore(c, "told", 1, lock.WithNamespace(e.ns))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return func(ctx context.Context) (*lock.Hold, error) { return s.Acquire(ctx, 1) }
		},
	}
	for kind, open := range kinds {
		t.Run(kind, func(t *testing.T) {
			lockA, lockB := open(cli), open(e.cli)
			ha, err := lockA(ctxT(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			granted := make(chan *lock.Hold, 1)
			go func() {
				hb, err := lockB(ctxT(t, 10*time.Second))
				if err != nil {
					t.Errorf("B: %v", err)
				}
				granted <- hb
			}()
			waitKeys(t, e.cli, ha.Token().Key[:strings.LastIndexByte(ha.Token().Key, '/')+1], 2)
			if _, err := e.cli.Delete(ctxT(t, 5*time.Second), ha.Token().Key); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ha.Done():
			case <-asked:
				t.Error("the holder asked etcd why its key went before it was told")
			}
			if err := ha.Err(); err != nil && !errors.Is(err, lock.ErrDeleted) {
				t.Errorf("A's Err = %v, want ErrDeleted", err)
			}
			if hb := <-granted; hb != nil {
				mustUnlock(t, hb)
			}
			if err := ha.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) {
				t.Errorf("A's Unlock = %v, want ErrNotHeld", err)
			}
		})
	}
}
