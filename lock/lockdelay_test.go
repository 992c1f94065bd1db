package lock_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/testutil"
	"github.com/etcdlock/etcdlock/lock"
)

// lockAsync starts m.Lock and returns the channel of its hold and of the
// time it was granted, once m's key is enqueued behind n others.
func lockAsync(t *testing.T, e *env, m *lock.Mutex, n int64) (<-chan *lock.Hold, <-chan time.Time) {
	t.Helper()
	hc, tc := make(chan *lock.Hold, 1), make(chan time.Time, 1)
	go func() {
		h, err := m.Lock(ctxT(t, 30*time.Second))
		tc <- time.Now()
		if err != nil {
			t.Error(err)
		}
		hc <- h
	}()
	waitKeys(t, e.cli, m.Prefix(), n+1)
	return hc, tc
}

// A clean Unlock hands off at once with lock-delay on, also when the
// releaser closes (revoking its lease, and with it the release's marker)
// right after: the waiter's wait is far below the delay.
func TestLockDelayCleanUnlockHandsOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const d = 5 * time.Second
	for _, closeAfter := range []bool{false, true} {
		m1 := e.mutex(e.cli, "clean", lock.WithTTL(2*time.Second), lock.WithLockDelay(d))
		m2 := e.mutex(e.client(), "clean", lock.WithTTL(2*time.Second), lock.WithLockDelay(d))
		h1 := mustLock(t, m1)
		hc, tc := lockAsync(t, e, m2, 1)
		released := time.Now()
		mustUnlock(t, h1)
		if closeAfter {
			if err := m1.Close(); err != nil {
				t.Fatal(err)
			}
		}
		granted, h2 := <-tc, <-hc
		if h2 == nil {
			t.FailNow()
		}
		if wait := granted.Sub(released); wait > d/2 {
			t.Errorf("close after unlock %v: clean handoff took %v, lock-delay %v", closeAfter, wait, d)
		}
		mustUnlock(t, h2)
	}
}

// After an unclean loss (the holder's lease revoked; its key deleted by
// another client) the next waiter is granted no sooner than the delay
// after the loss; meanwhile a newcomer's TryLock fails, and nothing is
// left in the namespace once all is done.
func TestLockDelayAfterUncleanLoss(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"revoke", "delete"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			const d = 2 * time.Second
			opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(d)}
			m1 := e.mutex(e.cli, "unclean", opts...)
			m2 := e.mutex(e.client(), "unclean", opts...)
			m3 := e.mutex(e.client(), "unclean", opts...)
			h1 := mustLock(t, m1)
			hc, tc := lockAsync(t, e, m2, 1)
			lost := time.Now() // before the loss: a lower bound of its time
			var err error
			if how == "revoke" {
				_, err = e.cli.Revoke(ctxT(t, 5*time.Second), h1.Lease())
			} else {
				_, err = e.cli.Delete(ctxT(t, 5*time.Second), h1.Token().Key)
			}
			if err != nil {
				t.Fatal(err)
			}
			waitClosed(t, h1.Done(), 5*time.Second, "the lost hold's Done")
			// The waiter records the loss; a newcomer is kept out.
			waitKeys(t, e.cli, e.ns+"lockdelay/", 1)
			if granted := (len(tc) > 0); !granted {
				if _, err := m3.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
					t.Errorf("TryLock during the lock-delay = %v, want ErrLocked", err)
				}
			}
			granted, h2 := <-tc, <-hc
			if h2 == nil {
				t.FailNow()
			}
			if gap := granted.Sub(lost); gap < d {
				t.Errorf("granted %v after the unclean loss, lock-delay %v", gap, d)
			}
			mustUnlock(t, h2)
			// The clean unlock just made lets the newcomer in at once.
			h3, err := m3.TryLock(ctxT(t, 5*time.Second))
			if err != nil {
				t.Fatalf("TryLock after a clean unlock: %v", err)
			}
			mustUnlock(t, h3)
		})
	}
}

// Lock-delay is for a Mutex only, and positive.
func TestLockDelayRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := lock.NewRWMutex(e.cli, "rw", lock.WithNamespace(e.ns), lock.WithLockDelay(time.Second)); !errors.Is(err, lock.ErrInvalidOption) {
		t.Errorf("RWMutex with lock-delay: %v", err)
	}
	if _, err := lock.NewSemaphore(e.cli, "sem", 2, lock.WithNamespace(e.ns), lock.WithLockDelay(time.Second)); !errors.Is(err, lock.ErrInvalidOption) {
		t.Errorf("Semaphore with lock-delay: %v", err)
	}
	for _, d := range []time.Duration{0, -time.Second} {
		if _, err := lock.NewMutex(e.cli, "m", lock.WithNamespace(e.ns), lock.WithLockDelay(d)); !errors.Is(err, lock.ErrInvalidOption) {
			t.Errorf("lock-delay %v: %v", d, err)
		}
	}
	if _, err := lock.NewEtcdMutex(e.cli, e.ns+"etcd", lock.WithNamespace(e.ns), lock.WithLockDelay(time.Second)); !errors.Is(err, lock.ErrInvalidOption) {
		t.Errorf("etcd layout with lock-delay: %v", err)
	}
}

// A holder whose key another client deletes while nobody waits records
// the loss itself: a later acquirer waits out the delay too.
func TestLockDelayDeletedWithNobodyWaiting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const d = 2 * time.Second
	opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(d)}
	m1 := e.mutex(e.cli, "alone", opts...)
	m2 := e.mutex(e.client(), "alone", opts...)
	h1 := mustLock(t, m1)
	lost := time.Now()
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), h1.Token().Key); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h1.Done(), 5*time.Second, "the lost hold's Done")
	waitKeys(t, e.cli, e.ns+"lockdelay/", 1)
	if _, err := m2.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Errorf("TryLock during the lock-delay = %v, want ErrLocked", err)
	}
	h2 := mustLock(t, m2)
	if gap := time.Since(lost); gap < d {
		t.Errorf("granted %v after the unclean loss, lock-delay %v", gap, d)
	}
	mustUnlock(t, h2)
}

// A clean handoff costs at most one request more with lock-delay than
// without: the marker is one more operation in the release's Txn, and the
// waiter reads it in its confirm read, which a waiter without lock-delay
// may skip (see below).
func TestLockDelayCleanHandoffRequests(t *testing.T) {
	e := newEnv(t)
	handoff := func(name string, opts ...lock.Option) map[string]int {
		cli, rpcs := testutil.RPCClient(t)
		opts = append([]lock.Option{lock.WithTTL(2 * time.Second)}, opts...)
		m1 := e.mutex(e.cli, name, opts...)
		m2 := e.mutex(cli, name, opts...)
		h1 := mustLock(t, m1)
		hc, _ := lockAsync(t, e, m2, 1)
		before := rpcs.Snapshot()
		mustUnlock(t, h1)
		h2 := <-hc
		if h2 == nil {
			t.FailNow()
		}
		mustUnlock(t, h2)
		// Watch streams open as the waits' timing goes (a stream may come
		// up before or after the snapshot); the requests that carry the
		// handoff are the KV and lease ones.
		got := rpcs.Since(before)
		maps.DeleteFunc(got, func(method string, _ int) bool { return strings.HasPrefix(method, "/etcdserverpb.Watch/") })
		return got
	}
	// The fewest of three tries: a waiter whose first confirm read comes
	// after the release was sent (its watch was slow to be created) reads
	// once more, with or without lock-delay.
	fewest := func(name string, opts ...lock.Option) map[string]int {
		var best map[string]int
		for i := range 3 {
			got := handoff(fmt.Sprintf("%s-%d", name, i), opts...)
			if best == nil || total(got) < total(best) {
				best = got
			}
		}
		return best
	}
	plain := fewest("plain")
	delayed := fewest("delayed", lock.WithLockDelay(5*time.Second))
	// Without lock-delay, a waiter whose last read came after its watches
	// were up is admitted on the delete alone (no confirm read); with it,
	// the waiter reads, since the read carries the release's marker. So
	// lock-delay may cost that one read-only Txn, and nothing else.
	extra := total(delayed) > total(plain)+1 || delayed["/etcdserverpb.KV/Txn"] > plain["/etcdserverpb.KV/Txn"]+1
	for method := range delayed {
		extra = extra || plain[method] == 0
	}
	if extra {
		t.Errorf("the waiter's requests from the release to its own unlock: %v with lock-delay, %v without", delayed, plain)
	}
	t.Logf("the waiter's requests from the release to its own unlock: %v with lock-delay, %v without", delayed, plain)
}

// total is the number of requests in counts.
func total(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// heldRecords returns the holding records under e's namespace.
func heldRecords(t *testing.T, e *env) int64 {
	t.Helper()
	resp, err := e.cli.Get(ctxT(t, 5*time.Second), e.ns+"lockdelay-held/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// A holder whose process dies (its client closed, nothing released)
// and whose lease then ends (revoked, or expired after its TTL) while
// nobody waits delays the next acquirer all the same: a new Mutex, on
// another client, that finds the lock idle and no delay recorded is
// granted no sooner than the delay after the loss, and nothing is left
// behind.
func TestLockDelayLeaseLostWithNobodyWaiting(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"revoke", "expire"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			const d = 3 * time.Second
			opts := []lock.Option{lock.WithNamespace(e.ns), lock.WithTTL(time.Second), lock.WithLockDelay(d)}
			dead, err := integration.Shared(t).NewClient()
			if err != nil {
				t.Fatal(err)
			}
			m1, err := lock.NewMutex(dead, "lost", opts...)
			if err != nil {
				t.Fatal(err)
			}
			h1 := mustLock(t, m1)
			lost := time.Now() // before the loss: a lower bound of its time
			dead.Close()       // the holder dies: no release, no renewal
			if how == "revoke" {
				if _, err := e.cli.Revoke(ctxT(t, 5*time.Second), h1.Lease()); err != nil {
					t.Fatal(err)
				}
			}
			waitKeys(t, e.cli, m1.Prefix(), 0) // expired: within the TTL
			_ = m1.Close()                     // its client is gone
			m2 := e.mutex(e.client(), "lost", opts...)
			if h, err := m2.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
				t.Errorf("TryLock after a loss nobody saw = %v, want ErrLocked", err)
				if err == nil {
					mustUnlock(t, h)
				}
			}
			h2 := mustLock(t, m2)
			if gap := time.Since(lost); gap < d {
				t.Errorf("granted %v after the unclean loss, lock-delay %v", gap, d)
			}
			if n := heldRecords(t, e); n != 1 {
				t.Errorf("%d holding records while one hold holds, want 1", n)
			}
			// The loss was paid for once: the next acquirer goes in at once.
			unlockLeavesNothing(t, e, h2, m2)
		})
	}
}

// Clean cycles with lock-delay on, uncontended and handed off, leave no
// holding record behind and pay no delay: a TryLock right after each
// Unlock succeeds.
func TestLockDelayCleanCyclesLeaveNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(5 * time.Second)}
	m1 := e.mutex(e.cli, "cycles", opts...)
	m2 := e.mutex(e.client(), "cycles", opts...)
	for i := range 3 {
		h := mustLock(t, m1)
		mustUnlock(t, h)
		h, err := m2.TryLock(ctxT(t, 5*time.Second))
		if err != nil {
			t.Fatalf("round %d: TryLock after a clean unlock: %v", i, err)
		}
		hc, _ := lockAsync(t, e, m1, 1)
		mustUnlock(t, h)
		h = <-hc
		if h == nil {
			t.FailNow()
		}
		mustUnlock(t, h)
		if n := heldRecords(t, e); n != 0 {
			t.Fatalf("round %d: %d holding records after clean unlocks, want 0", i, n)
		}
	}
	if h, err := m2.TryLock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("TryLock after clean cycles: %v", err)
	} else {
		mustUnlock(t, h)
	}
}

// A waiter that gives up (its context cancelled) is no loss: it never
// held. It leaves no holding record, and after the holder's clean Unlock
// a newcomer goes in at once.
func TestLockDelayGiveUpLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(5 * time.Second)}
	m1 := e.mutex(e.cli, "giveup", opts...)
	m2 := e.mutex(e.client(), "giveup", opts...)
	m3 := e.mutex(e.client(), "giveup", opts...)
	h1 := mustLock(t, m1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := m2.Lock(ctx)
		errc <- err
	}()
	waitKeys(t, e.cli, m1.Prefix(), 2)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock after its context was cancelled = %v", err)
	}
	waitKeys(t, e.cli, m1.Prefix(), 1)
	if n := heldRecords(t, e); n != 1 {
		t.Errorf("%d holding records after the waiter gave up, want 1 (the holder's)", n)
	}
	mustUnlock(t, h1)
	h3, err := m3.TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("TryLock after a give-up and a clean unlock: %v", err)
	}
	mustUnlock(t, h3)
	if n := heldRecords(t, e); n != 0 {
		t.Errorf("%d holding records at the end, want 0", n)
	}
}

// An uncontended Lock and Unlock cost the same requests with lock-delay
// as without: the holding record's put and read, and its delete, are
// operations in the Txns sent anyway.
func TestLockDelayUncontendedRequests(t *testing.T) {
	e := newEnv(t)
	cycle := func(name string, opts ...lock.Option) map[string]int {
		cli, rpcs := testutil.RPCClient(t)
		opts = append([]lock.Option{lock.WithTTL(2 * time.Second)}, opts...)
		m := e.mutex(cli, name, opts...)
		mustUnlock(t, mustLock(t, m)) // the lease's grant, out of the count
		before := rpcs.Snapshot()
		for range 3 {
			mustUnlock(t, mustLock(t, m))
		}
		got := rpcs.Since(before)
		maps.DeleteFunc(got, func(method string, _ int) bool { return strings.HasPrefix(method, "/etcdserverpb.Watch/") })
		return got
	}
	plain := cycle("plain")
	delayed := cycle("delayed", lock.WithLockDelay(5*time.Second))
	if !maps.Equal(plain, delayed) {
		t.Errorf("three uncontended Lock/Unlock cycles: %v with lock-delay, %v without", delayed, plain)
	}
	t.Logf("three uncontended Lock/Unlock cycles: %v with lock-delay, %v without", delayed, plain)
}

// An Unlock whose Txn fails (here its context has ended: it sends
// nothing) hands the key to the lease keeper, which deletes it in the
// background. That delete is the release's: it marks the end clean and
// drops the holding record with the key, so the waiter behind is granted
// with no delay recorded, and a newcomer after it finds no loss either.
func TestLockDelayUnlockFailedKeeperReleases(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const d = 5 * time.Second
	opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(d)}
	m1 := e.mutex(e.cli, "failed", opts...)
	m2 := e.mutex(e.client(), "failed", opts...)
	h1 := mustLock(t, m1)
	hc, _ := lockAsync(t, e, m2, 1)
	before, err := e.cli.Get(ctxT(t, 5*time.Second), e.ns+"lockdelay/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h1.Unlock(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("Unlock on an ended context = %v, want context.Canceled", err)
	}
	h2 := <-hc // the keeper deleted h1's key
	if h2 == nil {
		t.FailNow()
	}
	tok := h1.Token()
	marker, err := e.cli.Get(ctxT(t, 5*time.Second), e.ns+"released/"+strings.TrimPrefix(tok.Key, e.ns))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprint(tok.Revision); len(marker.Kvs) != 1 || string(marker.Kvs[0].Value) != want {
		t.Errorf("clean-release marker of the keeper's delete = %v, want value %s", marker.Kvs, want)
	}
	// No delay key at any revision since the Unlock: no loss was recorded.
	for rev := before.Header.Revision + 1; rev <= marker.Header.Revision; rev++ {
		resp, err := e.cli.Get(ctxT(t, 5*time.Second), e.ns+"lockdelay/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != 0 {
			t.Fatalf("a delay key exists at revision %d, after a released hold's key was deleted by the keeper", rev)
		}
	}
	if n := heldRecords(t, e); n != 1 {
		t.Errorf("%d holding records while one hold holds, want 1", n)
	}
	unlockLeavesNothing(t, e, h2, m1)
}

// With nobody waiting, a failed Unlock whose key the keeper deletes, and
// whose retry then returns nil (the key is gone): the keeper's delete is
// the release's, so it must carry the clean-release marker at its
// revision, and the next TryLock of the same Mutex is granted at once,
// lock-delay or not. (With lock-delay, a release that found its key gone
// does not give the name back, so the next hold takes another name.)
func TestLockDelayUnlockFailedNobodyWaiting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(5 * time.Second)}
	m := e.mutex(e.cli, "reused", opts...)
	h1 := mustLock(t, m)
	tok := h1.Token()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h1.Unlock(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("Unlock on an ended context = %v, want context.Canceled", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 0) // the keeper deleted it
	if err := h1.Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("Unlock again after the keeper's delete = %v, want nil", err)
	}
	h2, err := m.TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("TryLock after the unlock: %v", err)
	}
	defer mustUnlock(t, h2)
	// The marker of the first hold's end, as of the delete's revision.
	w := e.cli.Watch(ctxT(t, 5*time.Second), tok.Key, clientv3.WithRev(tok.Revision+1), clientv3.WithFilterPut())
	var delRev int64
	for wr := range w {
		if len(wr.Events) > 0 {
			delRev = wr.Events[0].Kv.ModRevision
			break
		}
	}
	if delRev == 0 {
		t.Fatal("no delete of the first hold's key seen")
	}
	marker, err := e.cli.Get(ctxT(t, 5*time.Second), e.ns+"released/"+strings.TrimPrefix(tok.Key, e.ns), clientv3.WithRev(delRev))
	if err != nil {
		t.Fatal(err)
	}
	if len(marker.Kvs) != 1 || string(marker.Kvs[0].Value) != fmt.Sprint(tok.Revision) || marker.Kvs[0].ModRevision != delRev {
		t.Errorf("the keeper's delete at revision %d carries no clean-release marker (%v)", delRev, marker.Kvs)
	}
}

// An unclean loss that no waiter saw (its key deleted by another client,
// nobody queued) still holds the lock back for the delay: the holder's
// next Lock takes another key name, so that it does not write over the
// lost hold's holding record, which tells it of the loss.
func TestLockDelayLossNobodySawSameMutex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const d = 3 * time.Second
	m := e.mutex(e.cli, "unseen", lock.WithTTL(2*time.Second), lock.WithLockDelay(d))
	h1 := mustLock(t, m)
	if _, err := e.client().Delete(ctxT(t, 5*time.Second), h1.Token().Key); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	select {
	case <-h1.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed 10s after the key's delete")
	}
	h2 := mustLock(t, m)
	gap := time.Since(lost)
	if h2.Token().Key == h1.Token().Key {
		t.Errorf("the next Lock reused the lost hold's key name %s", h2.Token().Key)
	}
	// The delay is measured from the loss as etcd's lease clock sees it,
	// so allow a little less than d.
	if gap < d-500*time.Millisecond {
		t.Errorf("granted %v after an unclean loss nobody saw, lock-delay %v", gap, d)
	}
	mustUnlock(t, h2)
}

// A second unclean loss during the delay of a first gets a delay of its
// own: the waiter behind it is granted no sooner than the delay after
// that second loss, although the delay key recorded for the first would
// expire sooner.
func TestLockDelaySecondLossDuringDelay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const d = 3 * time.Second
	opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(d)}
	m1 := e.mutex(e.client(), "twice", opts...)
	m2 := e.mutex(e.client(), "twice", opts...)
	m3 := e.mutex(e.client(), "twice", opts...)
	h1 := mustLock(t, m1)
	lost2 := make(chan error, 1)
	go func() { _, err := m2.Lock(ctxT(t, 30*time.Second)); lost2 <- err }()
	waitKeys(t, e.cli, m1.Prefix(), 2)
	hc, tc := lockAsync(t, e, m3, 2)
	// The first loss: m2, now at the head, records the delay.
	if _, err := e.cli.Revoke(ctxT(t, 5*time.Second), h1.Lease()); err != nil {
		t.Fatal(err)
	}
	waitKeys(t, e.cli, e.ns+"lockdelay/", 1)
	time.Sleep(d / 2) // bounded: half the first delay
	// The second: m2's key, at the head, goes with its lease.
	second := time.Now()
	if _, err := e.cli.Revoke(ctxT(t, 5*time.Second), clientv3.LeaseID(queueKeys(t, e, m2.Prefix(), 2)[0].Lease)); err != nil {
		t.Fatal(err)
	}
	if err := <-lost2; err == nil {
		t.Error("m2's Lock succeeded although its lease was revoked while it waited")
	}
	granted, h3 := <-tc, <-hc
	if h3 == nil {
		t.FailNow()
	}
	// etcd's lease clock ends a delay no sooner than its TTL; allow for
	// the time between the revoke's answer and the waiter's event.
	if gap := granted.Sub(second); gap < d-250*time.Millisecond {
		t.Errorf("granted %v after the second unclean loss, lock-delay %v", gap, d)
	}
	mustUnlock(t, h3)
}

// A waiter whose lease expires in the middle of the queue never held: the
// waiter behind it drops its holding record, so that a newcomer after the
// queue drains is not delayed for a loss that was none.
func TestLockDelayWaiterLostMidQueue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const d = 5 * time.Second
	opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(d)}
	m1 := e.mutex(e.client(), "mid", opts...)
	m2 := e.mutex(e.client(), "mid", opts...)
	m3 := e.mutex(e.client(), "mid", opts...)
	m4 := e.mutex(e.client(), "mid", opts...)
	h1 := mustLock(t, m1)
	lost2 := make(chan error, 1)
	go func() { _, err := m2.Lock(ctxT(t, 30*time.Second)); lost2 <- err }()
	waitKeys(t, e.cli, m1.Prefix(), 2)
	hc, _ := lockAsync(t, e, m3, 2)
	if _, err := e.cli.Revoke(ctxT(t, 5*time.Second), clientv3.LeaseID(queueKeys(t, e, m1.Prefix(), 3)[1].Lease)); err != nil {
		t.Fatal(err)
	}
	if err := <-lost2; err == nil {
		t.Error("m2's Lock succeeded although its lease was revoked while it waited")
	}
	// m3 drops m2's record; then h1's clean release hands off at once.
	waitKeys(t, e.cli, e.ns+"lockdelay-held/", 2)
	released := time.Now()
	mustUnlock(t, h1)
	h3 := <-hc
	if h3 == nil {
		t.FailNow()
	}
	if wait := time.Since(released); wait > d/2 {
		t.Errorf("m3 granted %v after a clean release, lock-delay %v", wait, d)
	}
	mustUnlock(t, h3)
	// The queue is empty: a newcomer is granted at once.
	start := time.Now()
	h4 := mustLock(t, m4)
	if wait := time.Since(start); wait > d/2 {
		t.Errorf("newcomer granted %v after the queue drained, lock-delay %v: a waiter lost mid-queue was taken for a holder", wait, d)
	}
	mustUnlock(t, h4)
}

// A head waiter that recorded an unclean loss and then gives up (its
// Lock's context ends within the delay) marks its end clean: the waiter
// behind it waits out that delay and no other. Waiters whose Locks time
// out within the delay once took turns giving up at the head, each one's
// key gone unmarked after the delay it recorded had ended, each delaying
// the next, and no Lock returned.
func TestLockDelayGiveUpAtHeadAfterRecording(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const d = 3 * time.Second
	opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(d)}
	// The holder's lease expires behind a blackholed proxy, so that it
	// cannot record its loss itself: m2 records it.
	p := integration.NewProxy(t, integration.Shared(t).Endpoint())
	defer p.Unblackhole() // before the deferred closes
	m1 := e.mutex(p.Client(t), "headgiveup", opts...)
	m2 := e.mutex(e.client(), "headgiveup", opts...)
	m3 := e.mutex(e.client(), "headgiveup", opts...)
	mustLock(t, m1)
	ctx2, giveUp := context.WithCancel(context.Background())
	defer giveUp()
	gave := make(chan error, 1)
	go func() { _, err := m2.Lock(ctx2); gave <- err }()
	waitKeys(t, e.cli, m1.Prefix(), 2)
	kv2 := queueKeys(t, e, m1.Prefix(), 2)[1]
	key2, rev2 := string(kv2.Key), kv2.CreateRevision
	hc, tc := lockAsync(t, e, m3, 2)
	p.Blackhole()
	// m2, at the head once the holder's lease expired, records the delay;
	// then gives up within it.
	waitKeys(t, e.cli, e.ns+"lockdelay/", 1)
	recorded := time.Now()
	// m2 gives up once it has the recording's answer, which nothing
	// outside it shows: a third of the delay (a context that ends before
	// the answer arrives leaves m2 unsure, and its end unmarked).
	time.Sleep(d / 3)
	giveUp()
	if err := <-gave; !errors.Is(err, context.Canceled) {
		t.Errorf("m2's Lock after its context ended = %v, want context.Canceled", err)
	}
	waitKeys(t, e.cli, m1.Prefix(), 1)
	marker := e.ns + "released/" + strings.TrimPrefix(key2, e.ns)
	if mr, err := e.cli.Get(ctxT(t, 5*time.Second), marker); err != nil || len(mr.Kvs) != 1 || string(mr.Kvs[0].Value) != fmt.Sprint(rev2) {
		t.Errorf("marker %s after m2 gave up at the head having recorded the delay: %v, %v; want its create revision %d", marker, mr, err, rev2)
	}
	granted, h3 := <-tc, <-hc
	if h3 == nil {
		t.FailNow()
	}
	if gap := granted.Sub(recorded); gap < d-250*time.Millisecond || gap > d+d/2 {
		t.Errorf("m3 granted %v after the delay was recorded, lock-delay %v", gap, d)
	}
	mustUnlock(t, h3)
}

// queueKeys returns the keys under prefix, oldest first, failing t unless
// there are n.
func queueKeys(t *testing.T, e *env, prefix string, n int) []*mvccpb.KeyValue {
	t.Helper()
	resp, err := e.cli.Get(ctxT(t, 5*time.Second), prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil || len(resp.Kvs) != n {
		t.Fatalf("queue %s: %v, %d keys, want %d", prefix, err, len(resp.Kvs), n)
	}
	return resp.Kvs
}

// unlockLeavesNothing unlocks h, then requires that no holding record is
// left and that a TryLock of m is granted at once: the release was clean
// and costs no delay.
func unlockLeavesNothing(t *testing.T, e *env, h *lock.Hold, m *lock.Mutex) {
	t.Helper()
	mustUnlock(t, h)
	if n := heldRecords(t, e); n != 0 {
		t.Errorf("%d holding records after a clean unlock, want 0", n)
	}
	h2, err := m.TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("TryLock after a clean unlock: %v", err)
	}
	mustUnlock(t, h2)
}

// A waiter that records an unclean loss is granted no sooner than the
// delay after it, also when its next reads are answered by a member that
// has not applied the delay key's put yet (a follower a few writes
// behind the leader: the confirm reads are serializable, and the watch
// it opens on the delay key is created there too). Such a read, newer
// than the waiter's last but older than its own put, once showed no key
// ahead and no delay key: the waiter took it for its admission, and was
// granted at once after recording the delay. The loss is seen by the
// waiter behind (the holder's key deleted while it waits), or found at
// enqueue (deleted while nobody waited).
func TestLockDelayRecordedThenReadBehind(t *testing.T) {
	t.Parallel()
	for _, found := range []string{"waiting", "enqueue"} {
		t.Run(found, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			const d = 2 * time.Second
			opts := []lock.Option{lock.WithTTL(2 * time.Second), lock.WithLockDelay(d)}
			// The holder is blackholed when its key is deleted, so that it
			// cannot record its loss itself: the acquirer does.
			p := integration.NewProxy(t, integration.Shared(t).Endpoint())
			defer p.Unblackhole() // before the deferred closes
			m1 := e.mutex(p.Client(t), "readbehind", opts...)
			cli2, lag := e.laggingClient(2)
			m2 := e.mutex(cli2, "readbehind", opts...)
			h1 := mustLock(t, m1)
			var (
				hc <-chan *lock.Hold
				tc <-chan time.Time
			)
			if found == "waiting" {
				hc, tc = lockAsync(t, e, m2, 1)
			}
			p.Blackhole()
			lost := time.Now() // before the loss: a lower bound of its time
			if _, err := e.cli.Delete(ctxT(t, 5*time.Second), h1.Token().Key); err != nil {
				t.Fatal(err)
			}
			if found == "enqueue" {
				hc, tc = lockAsync(t, e, m2, 0)
			}
			granted, h2 := <-tc, <-hc
			if h2 == nil {
				t.FailNow()
			}
			if n := lag.servedN(); n == 0 {
				t.Fatal("no read was answered behind the delay key's put: the acquirer did not record the loss")
			}
			if gap := granted.Sub(lost); gap < d {
				t.Errorf("granted %v after the unclean loss it recorded, lock-delay %v", gap, d)
			}
			mustUnlock(t, h2)
		})
	}
}

// lagState is a laggingClient's member: behind at revision stale (0
// while it is not) for left more reads.
type lagState struct {
	mu     sync.Mutex
	stale  int64
	left   int
	served int
}

func (l *lagState) servedN() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.served
}

// laggingClient returns a new client of the shared server that, once it
// has put a delay key under e.ns (it recorded an unclean loss), talks to
// a member that has not applied that put yet: its next n serializable
// read-only Txns, and the watches created meanwhile, are answered as of
// the revision before the put, as a follower behind the leader answers.
// Just before the put, another client writes twice (a key put and
// deleted), as others do on a shared cluster, so that the member's
// revision is newer than the waiter's last read.
func (e *env) laggingClient(n int) (*clientv3.Client, *lagState) {
	l := &lagState{}
	delayDir, scratch := e.ns+"lockdelay/", e.ns+"lag-scratch"
	unary := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		r, ok := req.(*pb.TxnRequest)
		if !ok {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		l.mu.Lock()
		stale, armed := l.stale, l.stale != 0
		serve := armed && l.left > 0 && serializableRead(r)
		if serve {
			l.left--
			l.served++
		}
		l.mu.Unlock()
		switch {
		case !armed && putsUnder(r, delayDir):
			if _, err := e.cli.Put(ctx, scratch, ""); err != nil {
				return err
			}
			if _, err := e.cli.Delete(ctx, scratch); err != nil {
				return err
			}
			err := invoker(ctx, method, req, reply, cc, opts...)
			if resp := reply.(*pb.TxnResponse); err == nil && resp.Succeeded {
				l.mu.Lock()
				l.stale, l.left = resp.Header.Revision-1, n
				l.mu.Unlock()
			}
			return err
		case serve:
			r = proto.Clone(r).(*pb.TxnRequest)
			for _, op := range r.Success {
				op.GetRequestRange().Revision = stale
			}
			err := invoker(ctx, method, r, reply, cc, opts...)
			if err == nil {
				reply.(*pb.TxnResponse).Header.Revision = stale
			}
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	stream := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/etcdserverpb.Watch/Watch" {
			return s, err
		}
		return &laggingWatch{ClientStream: s, l: l}, nil
	})
	cli, err := integration.Shared(e.t).NewClient(func(cfg *clientv3.Config) {
		cfg.DialOptions = append(cfg.DialOptions, unary, stream)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cli.Close() })
	return cli, l
}

// laggingWatch answers a watch's creation, while its client's member is
// behind, with the member's revision.
type laggingWatch struct {
	grpc.ClientStream
	l *lagState
}

func (s *laggingWatch) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if wr, ok := m.(*pb.WatchResponse); ok && err == nil && wr.Created && wr.Header != nil {
		s.l.mu.Lock()
		if s.l.stale != 0 && s.l.left > 0 {
			wr.Header.Revision = min(wr.Header.Revision, s.l.stale)
		}
		s.l.mu.Unlock()
	}
	return err
}

// serializableRead reports whether r reads only, with serializable
// ranges: a member answers it from its own state.
func serializableRead(r *pb.TxnRequest) bool {
	if len(r.Compare) != 0 || len(r.Failure) != 0 || len(r.Success) == 0 {
		return false
	}
	for _, op := range r.Success {
		if rr := op.GetRequestRange(); rr == nil || !rr.Serializable {
			return false
		}
	}
	return true
}

// putsUnder reports whether r's success branch puts a key under prefix.
func putsUnder(r *pb.TxnRequest, prefix string) bool {
	for _, op := range r.Success {
		if put := op.GetRequestPut(); put != nil && strings.HasPrefix(string(put.Key), prefix) {
			return true
		}
	}
	return false
}
