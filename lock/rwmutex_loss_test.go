package lock_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/lock"
)

// revokeSession revokes s's lease. It may run outside the test's goroutine.
func revokeSession(t *testing.T, cli *clientv3.Client, s *concurrency.Session) {
	t.Helper()
	if _, err := cli.Revoke(ctxT(t, 5*time.Second), s.Lease()); err != nil {
		t.Errorf("Revoke: %v", err)
	}
}

// TestRWWaiterSessionRevoked is etcd #16221: w1 holds, w2 waits on a session
// that is revoked, w3 and a reader wait behind w2. w2 must fail, and w3 and
// the reader must go on waiting for w1, then hold in turn.
func TestRWWaiterSessionRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.rwmutex(e.cli, "ws")
	w1 := mustWLock(t, m)
	cli := e.client()
	s := newTestSession(t, cli)
	sm := e.rwmutex(cli, "ws", lock.WithSession(s))
	ctx := ctxT(t, 30*time.Second)
	w2 := goAcquire(func() (*lock.Hold, error) { return sm.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 2)
	w3 := goAcquire(func() (*lock.Hold, error) { return m.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 3)
	r := goAcquire(func() (*lock.Hold, error) { return m.RLock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 4)
	rs := goAcquire(func() (*lock.Hold, error) { return sm.RLock(ctx) }) // a reader on the same session
	waitKeys(t, e.cli, m.Prefix(), 5)

	revokeSession(t, e.cli, s)
	if err := failedAcquire(t, w2, "w2"); !errors.Is(err, lock.ErrSessionExpired) {
		t.Fatalf("w2 after revoke = %v, want ErrSessionExpired", err)
	}
	if err := failedAcquire(t, rs, "reader on the revoked session"); !errors.Is(err, lock.ErrSessionExpired) {
		t.Fatalf("reader after revoke = %v, want ErrSessionExpired", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 3)
	// w3 and r were woken by w2's delete; give a wrongly admitted waiter a
	// moment to show itself.
	select {
	case <-w3.done:
		t.Fatalf("w3 granted while w1 holds: %v %v", w3.h, w3.err)
	case <-r.done:
		t.Fatalf("reader granted while w1 holds: %v %v", r.h, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	mustUnlock(t, w1)
	w3h := grantedHold(t, w3, "w3")
	stillWaiting(t, r, "reader while w3 holds")
	mustUnlock(t, w3h)
	mustUnlock(t, grantedHold(t, r, "reader"))
}

// TestRWHolderSessionRevoked revokes a writer's session while readers wait,
// then a reader's while a writer waits: the hold is reported lost, the
// waiters are granted with higher tokens, the lost hold's Unlock says so,
// and an RWFence refuses the stale holder.
func TestRWHolderSessionRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	m := e.rwmutex(e.cli, "hs")
	ctx := ctxT(t, 30*time.Second)
	var fence fencing.RWFence

	s := newTestSession(t, cli)
	sm := e.rwmutex(cli, "hs", lock.WithSession(s))
	w := mustWLock(t, sm)
	if err := fence.AdmitWrite("res", w.Token()); err != nil {
		t.Fatal(err)
	}
	r1 := goAcquire(func() (*lock.Hold, error) { return m.RLock(ctx) })
	r2 := goAcquire(func() (*lock.Hold, error) { return m.RLock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 3)
	revokeSession(t, e.cli, s)
	waitClosed(t, w.Done(), 2*time.Second, "writer's Done after revoke")
	if !errors.Is(w.Err(), lock.ErrLost) {
		t.Fatalf("writer Err = %v, want ErrLost", w.Err())
	}
	h1, h2 := grantedHold(t, r1, "r1"), grantedHold(t, r2, "r2")
	for _, h := range []*lock.Hold{h1, h2} {
		if !h.Token().Newer(w.Token()) {
			t.Fatalf("reader token %v not above lost writer's %v", h.Token(), w.Token())
		}
		if err := fence.AdmitRead("res", h.Token()); err != nil {
			t.Fatalf("fence refused a current reader: %v", err)
		}
	}
	if err := w.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) || !errors.Is(err, lock.ErrLost) {
		t.Fatalf("Unlock of lost writer = %v, want ErrNotHeld wrapping ErrLost", err)
	}
	if err := fence.AdmitWrite("res", w.Token()); !errors.Is(err, fencing.ErrStale) {
		t.Fatalf("fence admitted the stale writer after newer readers: %v", err)
	}
	mustUnlock(t, h1)

	// Now a reader's session is revoked while a writer waits behind it.
	s2 := newTestSession(t, cli)
	sm2 := e.rwmutex(cli, "hs", lock.WithSession(s2))
	r3 := mustRLock(t, sm2)
	mustUnlock(t, h2)
	pw := goAcquire(func() (*lock.Hold, error) { return m.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 2)
	stillWaiting(t, pw, "writer behind a reader")
	revokeSession(t, e.cli, s2)
	wh := grantedHold(t, pw, "writer after the reader's session ended")
	waitClosed(t, r3.Done(), 2*time.Second, "reader's Done after revoke")
	if err := fence.AdmitWrite("res", wh.Token()); err != nil {
		t.Fatalf("fence refused a current writer: %v", err)
	}
	if err := fence.AdmitRead("res", r3.Token()); !errors.Is(err, fencing.ErrStale) {
		t.Fatalf("fence admitted a stale reader after a newer writer: %v", err)
	}
	if err := r3.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("Unlock of lost reader = %v, want ErrNotHeld", err)
	}
	mustUnlock(t, wh)
}

// TestRWRevokedAtRandomPoints runs workers that each take read or write
// holds on their own session and, at random, have the session revoked while
// they wait or while they hold. Whenever a hold is granted, no conflicting
// hold whose owner still believes it holds may have its key: never two
// writers, never a writer with a reader. A waiter whose session is revoked
// gets ErrSessionExpired (or, if it was granted first, sees its hold lost),
// and no key is left behind.
func TestRWRevokedAtRandomPoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const workers, rounds = 8, 20
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	var (
		mu     sync.Mutex
		active = make(map[*lock.Hold]bool) // hold -> write
		stats  struct{ midWait, holding, grantedFirst atomic.Int32 }
		wg     sync.WaitGroup
	)
	// enter records h as held and checks it against the other holds.
	enter := func(h *lock.Hold, write bool) {
		mu.Lock()
		defer mu.Unlock()
		for o, ow := range active {
			if (!write && !ow) || o.Err() != nil {
				continue
			}
			// o's owner has not seen a loss yet; that is allowed only if
			// its key is already gone (the loss is on its way).
			resp, err := e.cli.Get(ctxT(t, 5*time.Second), o.Token().Key)
			if err != nil {
				t.Errorf("Get: %v", err)
				continue
			}
			if len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == o.Token().Revision {
				t.Errorf("hold %v (write %v) granted while %v (write %v) holds", h.Token(), write, o.Token(), ow)
			}
		}
		active[h] = write
	}
	leave := func(h *lock.Hold) {
		mu.Lock()
		delete(active, h)
		mu.Unlock()
	}
	cli := e.client()
	for i := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() {
			s := newTestSession(t, cli)
			m := e.rwmutex(cli, "chaos", lock.WithSession(s))
			mb := e.rwmutex(e.cli, "chaos") // never revoked
			renew := func() {
				_ = m.Close()
				_ = s.Close()
				s = newTestSession(t, cli)
				m = e.rwmutex(cli, "chaos", lock.WithSession(s))
			}
			for range rounds {
				write := rng.IntN(2) == 0
				fate := rng.IntN(10)
				ctx := ctxT(t, 30*time.Second)
				var blocker *lock.Hold
				if fate < 3 {
					// Hold the lock for writing first, so that the waiter
					// about to be revoked really waits.
					var err error
					if blocker, err = mb.Lock(ctx); err != nil {
						t.Errorf("Lock: %v", err)
						return
					}
					enter(blocker, true)
				}
				p := goAcquire(func() (*lock.Hold, error) {
					var h *lock.Hold
					var err error
					if write {
						h, err = m.Lock(ctx)
					} else {
						h, err = m.RLock(ctx)
					}
					if err == nil {
						enter(h, write)
					}
					return h, err
				})
				switch {
				case fate < 3: // revoke mid-wait, at a random point
					waitLeaseKey(t, e.cli, m.Prefix(), s.Lease(), p.done)
					unblock := func() {
						leave(blocker)
						if err := blocker.Unlock(ctxT(t, 5*time.Second)); err != nil {
							t.Errorf("Unlock: %v", err)
						}
					}
					if rng.IntN(2) == 0 {
						revokeSession(t, e.cli, s) // surely while it waits for blocker
						unblock()
					} else {
						unblock() // then it may still wait for others, confirm, or hold
						time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
						revokeSession(t, e.cli, s)
					}
					<-p.done
					if p.err == nil {
						stats.grantedFirst.Add(1)
						checkLost(t, p.h, leave)
					} else {
						if !errors.Is(p.err, lock.ErrSessionExpired) {
							t.Errorf("waiter revoked mid-wait = %v, want ErrSessionExpired", p.err)
						}
						stats.midWait.Add(1)
					}
					renew()
				case fate < 5: // revoke while holding
					<-p.done
					if p.err != nil {
						t.Errorf("acquire: %v", p.err)
						return
					}
					revokeSession(t, e.cli, s)
					stats.holding.Add(1)
					checkLost(t, p.h, leave)
					renew()
				default:
					<-p.done
					if p.err != nil {
						t.Errorf("acquire: %v", p.err)
						return
					}
					time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond) // work
					leave(p.h)
					if err := p.h.Unlock(ctxT(t, 5*time.Second)); err != nil {
						t.Errorf("Unlock: %v", err)
					}
				}
			}
			_ = m.Close()
		})
	}
	wg.Wait()
	t.Logf("revoked mid-wait %d, while holding %d, granted just before the revoke %d",
		stats.midWait.Load(), stats.holding.Load(), stats.grantedFirst.Load())
	if stats.midWait.Load() == 0 || stats.holding.Load() == 0 {
		t.Errorf("the random schedule revoked no waiter mid-wait or no holder; seed %d", seed)
	}
}

// checkLost checks that h, whose session was revoked, reports the loss, and that
// its Unlock says it was not held.
func checkLost(t *testing.T, h *lock.Hold, leave func(*lock.Hold)) {
	t.Helper()
	select {
	case <-h.Done():
	case <-time.After(5 * time.Second):
		t.Errorf("hold %v: no loss reported 5s after its session was revoked", h.Token())
	}
	leave(h)
	if !errors.Is(h.Err(), lock.ErrLost) {
		t.Errorf("hold %v: Err = %v, want ErrLost", h.Token(), h.Err())
	}
	if err := h.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("Unlock of lost hold = %v, want ErrNotHeld", err)
	}
}

// waitLeaseKey blocks until a key of lease exists under prefix (any depth),
// or stop is closed.
func waitLeaseKey(t *testing.T, cli *clientv3.Client, prefix string, id clientv3.LeaseID, stop <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	<-w
	for {
		// Not WithKeysOnly: etcd 3.7 answers those from its index, without
		// the lease.
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			t.Errorf("Get: %v", err)
			return
		}
		for _, kv := range resp.Kvs {
			if kv.Lease == int64(id) {
				return
			}
		}
		select {
		case <-w:
		case <-stop:
			return
		case <-ctx.Done():
			t.Errorf("no key of lease %x under %s", id, prefix)
			return
		}
	}
}
