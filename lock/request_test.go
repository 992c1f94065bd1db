package lock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// requests returns the number of release-request keys in the namespace.
func (e *env) requests() int64 {
	e.t.Helper()
	resp, err := e.cli.Get(ctxT(e.t, 5*time.Second), e.ns+"revoke/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Count
}

// An honoured request: the holder sees it, unlocks, and the waiter that
// queued after the request key was written holds next: the request key is
// no waiter of the queue, and Inspect does not list it.
func TestRequestReleaseHonoured(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	holderM := e.mutex(e.cli, "job")
	h := mustLock(t, holderM)
	asker := e.mutex(e.client(), "job", lock.WithHolder("operator"))
	tok, err := asker.RequestRelease(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("RequestRelease: %v", err)
	}
	if tok != h.Token() {
		t.Fatalf("asked %v, want the holder %v", tok, h.Token())
	}
	if n := e.requests(); n != 1 {
		t.Fatalf("%d request keys, want 1", n)
	}
	// The request came before the holder looked: it is seen anyway.
	waitClosed(t, h.ReleaseRequested(), 10*time.Second, "ReleaseRequested")

	got := make(chan error, 1)
	go func() {
		w, err := asker.Lock(ctxT(t, 10*time.Second))
		if err == nil {
			err = w.Unlock(ctxT(t, 5*time.Second))
		}
		got <- err
	}()
	waitKeys(t, e.cli, holderM.Prefix(), 2)
	st, err := lock.Inspect(ctxT(t, 5*time.Second), e.cli, e.ns, "job")
	if err != nil {
		t.Fatal(err)
	}
	if keys := st.Lock(lock.KindMutex).Keys; len(keys) != 2 || !keys[0].Holding || !keys[1].Waiting() {
		t.Fatalf("Inspect: %+v, want the holder and one waiter", keys)
	}
	mustUnlock(t, h)
	if err := <-got; err != nil {
		t.Fatalf("waiter after the request: %v", err)
	}
	if n := e.requests(); n != 0 {
		t.Fatalf("%d request keys after Unlock, want 0", n)
	}
}

// An ignored request changes nothing: the holder keeps the lock, and the
// request goes with the hold.
func TestRequestReleaseIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "job")
	h := mustLock(t, m)
	requested := h.ReleaseRequested() // watching before the request
	if _, err := lock.RequestRelease(ctxT(t, 5*time.Second), e.client(), e.ns, lock.KindMutex, "job", "cli"); err != nil {
		t.Fatalf("RequestRelease: %v", err)
	}
	waitClosed(t, requested, 10*time.Second, "ReleaseRequested")
	if _, err := e.mutex(e.client(), "job").TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock while the holder ignores the request = %v, want ErrLocked", err)
	}
	if h.Err() != nil {
		t.Fatalf("hold ended by a request: %v", h.Err())
	}
	mustUnlock(t, h)
	if n := e.requests(); n != 0 {
		t.Fatalf("%d request keys after Unlock, want 0", n)
	}
	// A request key naming another hold (left by a hold of the same key
	// name that was lost) is not a request for this one.
	h2 := mustLock(t, m)
	stale := e.ns + "revoke/" + strings.TrimPrefix(h2.Token().Key, e.ns)
	if _, err := e.cli.Put(ctxT(t, 5*time.Second), stale, "1 someone"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h2.ReleaseRequested():
		t.Fatal("a hold took a request naming another hold's revision")
	case <-time.After(300 * time.Millisecond): // a watch catches up within 100 ms
	}
	mustUnlock(t, h2)
}

// Every reader of an RWMutex is asked; a hold lost to a delete after a
// request leaves no request behind.
func TestRequestReleaseReadersAndLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rw := e.rwmutex(e.cli, "db")
	r1, err := rw.RLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := rw.RLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	toks, err := rw.RequestRelease(ctxT(t, 5*time.Second))
	if err != nil || len(toks) != 2 {
		t.Fatalf("RequestRelease = %v, %v; want both readers", toks, err)
	}
	waitClosed(t, r1.ReleaseRequested(), 10*time.Second, "r1 ReleaseRequested")
	waitClosed(t, r2.ReleaseRequested(), 10*time.Second, "r2 ReleaseRequested")
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), r2.Token().Key); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, r2.Done(), 10*time.Second, "r2 Done after its key was deleted")
	mustUnlock(t, r1)
	if err := r2.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("Unlock of the lost reader = %v, want ErrNotHeld", err)
	}
	waitNoRequests(t, e)
}

// waitNoRequests waits for the request keys to be gone (a lost
// hold's is deleted by its watch, in the background).
func waitNoRequests(t *testing.T, e *env) {
	t.Helper()
	waitKeys(t, e.cli, e.ns+"revoke/", 0)
}

func TestRequestReleaseBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t, 5*time.Second)
	if _, err := lock.RequestRelease(ctx, e.cli, e.ns, lock.KindMutex, "free", ""); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("nobody holds: %v, want ErrNotHeld", err)
	}
	if _, err := lock.RequestRelease(ctx, nil, e.ns, lock.KindMutex, "x", ""); !errors.Is(err, lock.ErrNilClient) {
		t.Errorf("nil client: %v, want ErrNilClient", err)
	}
	if _, err := lock.RequestRelease(ctx, e.cli, e.ns, "election", "x", ""); !errors.Is(err, lock.ErrInvalidOption) {
		t.Errorf("bad kind: %v, want ErrInvalidOption", err)
	}
	if _, err := lock.RequestRelease(ctx, e.cli, e.ns, lock.KindMutex, "", ""); !errors.Is(err, lock.ErrInvalidName) {
		t.Errorf("empty name: %v, want ErrInvalidName", err)
	}
	if _, err := lock.RequestRelease(ctx, e.cli, e.ns, lock.KindMutex, "x", strings.Repeat("a", lock.MaxRequesterLen+1)); !errors.Is(err, lock.ErrInvalidOption) {
		t.Errorf("long requester: %v, want ErrInvalidOption", err)
	}
	m := e.mutex(e.cli, "x")
	h := mustLock(t, m)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.RequestRelease(ended); !errors.Is(err, context.Canceled) {
		t.Errorf("ended context: %v, want context.Canceled", err)
	}
	if n := e.requests(); n != 0 {
		t.Errorf("%d request keys after an ended context's request", n)
	}
	mustUnlock(t, h)
	closed := e.mutex(e.cli, "x")
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := closed.RequestRelease(ctx); !errors.Is(err, lock.ErrClosed) {
		t.Errorf("closed Mutex: %v, want ErrClosed", err)
	}
	// After the hold ended, its channel never closes and no watch starts.
	select {
	case <-h.ReleaseRequested():
		t.Error("ReleaseRequested of an unlocked hold closed")
	default:
	}
}

// The round trips of the recipes: RequestRelease is a read and a Txn;
// ReleaseRequested opens a watch and sends no KV or lease call; Unlock
// stays one Txn (it deletes the request key in it); an early Unlock under
// WithMinHold is a lease grant and a Txn.
func TestRecipeRoundTrips(t *testing.T) {
	e := newEnv(t)
	cli, rpcs := e.rpcClient()
	const txn, grant = "/etcdserverpb.KV/Txn", "/etcdserverpb.Lease/LeaseGrant"
	// unary: the calls since before, but the watch streams a hold's
	// monitor may open meanwhile (its own key's, 20 ms after a grant).
	unary := func(before map[string]int) map[string]int {
		calls := rpcs.Since(before)
		delete(calls, "/etcdserverpb.Watch/Watch")
		return calls
	}

	h := e.lockAfterWait(e.mutex(cli, "rt"))
	before := rpcs.Snapshot()
	requested := h.ReleaseRequested()
	if _, err := lock.RequestRelease(ctxT(t, 5*time.Second), e.cli, e.ns, lock.KindMutex, "rt", ""); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, requested, 10*time.Second, "ReleaseRequested")
	if calls := unary(before); len(calls) != 0 {
		t.Errorf("ReleaseRequested sent %v, want no call but a watch", calls)
	}

	before = rpcs.Snapshot()
	mustUnlock(t, h)
	if calls := unary(before); len(calls) != 1 || calls[txn] != 1 {
		t.Errorf("Unlock sent %v, want one Txn", calls)
	}

	asker := e.mutex(cli, "rt2")
	held := mustLock(t, e.mutex(e.cli, "rt2"))
	before = rpcs.Snapshot()
	if _, err := asker.RequestRelease(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if calls := unary(before); len(calls) != 1 || calls[txn] != 2 {
		t.Errorf("RequestRelease sent %v, want 2 Txns (the read and the guarded puts)", calls)
	}
	mustUnlock(t, held)

	minHold := e.mutex(cli, "rt3", lock.WithTTL(2*time.Second), lock.WithMinHold(time.Second))
	h = e.lockAfterWait(minHold)
	before = rpcs.Snapshot()
	mustUnlock(t, h)
	if calls := unary(before); len(calls) != 2 || calls[txn] != 1 || calls[grant] != 1 {
		t.Errorf("early Unlock under WithMinHold sent %v, want a lease grant and a Txn", calls)
	}
	waitKeys(t, e.cli, minHold.Prefix(), 0) // the minimum passes
}

// A hold that starts watching for requests after etcd compacted its key's
// revision reads the request instead.
func TestReleaseRequestedAfterCompaction(t *testing.T) {
	t.Parallel()
	srv := integration.NewServer(t, integration.WithoutFsync())
	cli := srv.Client(t)
	m, err := lock.NewMutex(cli, "c", lock.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		integration.RequireEmpty(t, cli, lock.DefaultNamespace)
	}()
	h := mustLock(t, m)
	if _, err := m.RequestRelease(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Put(ctxT(t, 5*time.Second), "unrelated", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctxT(t, 5*time.Second), "unrelated"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctxT(t, 5*time.Second), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h.ReleaseRequested(), 10*time.Second, "ReleaseRequested after a compaction")
	mustUnlock(t, h)
}

// lockAfterWait locks m once another client's hold of the same name has
// gone: a hold granted after a wait keeps the watch it waited with, so its
// monitor sends nothing more.
func (e *env) lockAfterWait(m *lock.Mutex) *lock.Hold {
	e.t.Helper()
	blocker := mustLock(e.t, e.mutex(e.cli, m.Name()))
	got := make(chan *lock.Hold, 1)
	go func() {
		h, err := m.Lock(ctxT(e.t, 10*time.Second))
		if err != nil {
			e.t.Error(err)
		}
		got <- h
	}()
	waitKeys(e.t, e.cli, m.Prefix(), 2)
	mustUnlock(e.t, blocker)
	h := <-got
	if h == nil {
		e.t.FailNow()
	}
	return h
}
