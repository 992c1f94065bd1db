package lock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// TestLossToldBeforeExpiryAfterDeadlineLoss: a hold is lost to its
// deadline while its lease lives on (another client renews it while the
// holder is cut off); the lock is then taken again on the same lease while
// the holder's answers come late, and then the holder's requests are
// dropped. The second hold must be told of the loss before etcd expires
// the lease and deletes its key: the epoch opened after the jeopardy must
// be timed from the send of a renewal etcd applied.
func TestLossToldBeforeExpiryAfterDeadlineLoss(t *testing.T) {
	e := newEnv(t)
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)
	direct := srv.Client(t)
	defer p.UnblackholeRequests()
	defer p.Unblackhole()

	const ttl = 2 * time.Second
	const late = 500 * time.Millisecond // within a renewal's period
	m := e.mutex(cli, "late", lock.WithTTL(ttl))
	h1 := mustLock(t, m)

	// 1. The holder cut off, while another client keeps its lease alive:
	// the first hold is lost to its deadline, the lease lives on.
	ctx, stopRenew := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_, _ = direct.KeepAliveOnce(ctx, h1.Lease())
			select {
			case <-ctx.Done():
			case <-time.After(ttl / 10):
			}
		}
	}()
	p.Blackhole()
	select {
	case <-h1.Done():
	case <-time.After(5 * ttl):
		t.Fatal("the first hold was never lost")
	}
	if !errors.Is(h1.Err(), lock.ErrDeadline) {
		t.Fatalf("first hold: Err = %v, want ErrDeadline", h1.Err())
	}
	p.Unblackhole()
	_ = h1.Unlock(ctxT(t, 5*ttl))

	// 2. Answers late: the lock is taken again, on the same lease.
	p.DelayResponses(late)
	defer p.UndelayResponses(late)
	h2 := mustLockWithin(t, m, 10*ttl)
	stopRenew()
	wg.Wait()
	if h2.Lease() != h1.Lease() {
		t.Fatalf("the second hold is on lease %x, not the first's %x", h2.Lease(), h1.Lease())
	}
	del := e.cli.Watch(ctxT(t, 10*ttl), h2.Token().Key, clientv3.WithRev(h2.Token().Revision+1), clientv3.WithFilterPut())
	// Renewals answered late for a TTL. A late answer can let the
	// deadline pass meanwhile; the keeper then deletes the key itself,
	// and there is no lease expiry left to compare with.
	select {
	case <-h2.Done():
		t.Logf("the second hold was lost before the requests were dropped (%v): nothing to compare", h2.Err())
		return
	case <-time.After(ttl):
	}

	// 3. Requests dropped: etcd expires the lease.
	p.BlackholeRequests()
	dropped := time.Now()
	var toldAt, deletedAt, deadline time.Time
	done := h2.Done()
	for toldAt.IsZero() || deletedAt.IsZero() {
		select {
		case <-done:
			toldAt, done = time.Now(), nil
		case wr := <-del:
			if len(wr.Events) > 0 {
				deletedAt, del = time.Now(), nil
				deadline = h2.Deadline()
			}
		case <-time.After(5 * ttl):
			t.Fatalf("after %v: told %v, deleted %v", time.Since(dropped), !toldAt.IsZero(), !deletedAt.IsZero())
		}
	}
	t.Logf("requests dropped; holder told after %v (%v), key deleted by the lease's end after %v, %v after the deadline",
		toldAt.Sub(dropped), h2.Err(), deletedAt.Sub(dropped), deletedAt.Sub(deadline))
	if toldAt.After(deletedAt) {
		t.Fatalf("holder told of the loss %v after etcd expired the lease and deleted its key (%v)", toldAt.Sub(deletedAt), h2.Err())
	}
	// etcd expires the lease no sooner than TTL after it applied the last
	// renewal, which it received after its send: a deadline timed from
	// that send (TTL less the margin, TTL/5) is at least the margin before
	// the delete. Less means the deadline was timed from something later.
	if left := deletedAt.Sub(deadline); left < ttl/5 {
		t.Fatalf("the hold's deadline was %v before etcd deleted its key; want at least the margin, %v", left, ttl/5)
	}
	if !errors.Is(h2.Err(), lock.ErrDeadline) {
		t.Fatalf("second hold: Err = %v, want ErrDeadline", h2.Err())
	}
}

func mustLockWithin(t *testing.T, m *lock.Mutex, d time.Duration) *lock.Hold {
	t.Helper()
	h, err := m.Lock(ctxT(t, d))
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	return h
}
