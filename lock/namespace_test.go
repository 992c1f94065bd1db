package lock_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// namespacedClient returns a new client whose KV, Watcher and Lease are
// wrapped by etcd's namespace package, as many programs do.
func (e *env) namespacedClient(prefix string) *clientv3.Client {
	cli := e.client()
	cli.KV = namespace.NewKV(cli.KV, prefix)
	cli.Watcher = namespace.NewWatcher(cli.Watcher, prefix)
	cli.Lease = namespace.NewLease(cli.Lease, prefix)
	return cli
}

// Locks work through a client wrapped by etcd's namespace package: a
// waiter is woken through the wrapped watch when the holder unlocks, a
// hold notices its key deleted from outside, fencing.Commit applies
// through the wrapped KV, and nothing is left, under the wrapper's prefix
// as seen by an unwrapped client.
func TestNamespacedClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const wrap = "wrapped/"
	t.Cleanup(func() { integration.RequireEmpty(t, e.cli, wrap+e.ns) })
	ca, cb := e.namespacedClient(wrap), e.namespacedClient(wrap)
	ma, mb := e.mutex(ca, "m"), e.mutex(cb, "m")
	ha := mustLock(t, ma)
	got := make(chan *lock.Hold, 1)
	go func() {
		h, err := mb.Lock(ctxT(t, 10*time.Second))
		if err != nil {
			t.Errorf("Lock: %v", err)
		}
		got <- h
	}()
	waitKeys(t, e.cli, wrap+e.ns, 2) // the holder's key and the waiter's, under the wrapper's prefix
	if _, err := fencing.Commit(ctxT(t, 5*time.Second), ca, ha.Token(), clientv3.OpPut(e.ns+"data", "a")); err != nil {
		t.Fatalf("Commit through the wrapped client: %v", err)
	}
	mustUnlock(t, ha)
	hb := <-got
	if hb == nil {
		return
	}
	if hb.Token().Revision <= ha.Token().Revision {
		t.Fatalf("token %v not above %v", hb.Token(), ha.Token())
	}
	if _, err := fencing.Commit(ctxT(t, 5*time.Second), ca, ha.Token(), clientv3.OpPut(e.ns+"data", "stale")); err == nil {
		t.Fatal("Commit with the old holder's token applied")
	}
	// Deleted from outside (unwrapped): the hold is told.
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), wrap+hb.Token().Key); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, hb.Done(), 5*time.Second, "Done after an outside delete")
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), wrap+e.ns+"data"); err != nil {
		t.Fatal(err)
	}

	// The read-write lock's shared watch, through the wrapper too.
	ra, wb := e.rwmutex(ca, "rw"), e.rwmutex(cb, "rw")
	r, err := ra.RLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	wgot := make(chan *lock.Hold, 1)
	go func() {
		h, err := wb.Lock(ctxT(t, 10*time.Second))
		if err != nil {
			t.Errorf("Lock: %v", err)
		}
		wgot <- h
	}()
	waitKeys(t, e.cli, wrap+e.ns, 2)
	mustUnlock(t, r)
	if w := <-wgot; w != nil {
		mustUnlock(t, w)
	}
}

// A namespace without a trailing '/' gets one: WithNamespace("app") puts
// the keys under "app/mutex/...", not "appmutex/...", so the lock is the
// one of WithNamespace("app/"), Inspect and RequestRelease find it under
// either spelling, and nothing is left under "app/".
func TestNamespaceWithoutSlash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bare := strings.TrimSuffix(e.ns, "/")
	t.Cleanup(func() { integration.RequireEmpty(t, e.cli, bare) })
	a := e.mutex(e.cli, "x", lock.WithTTL(2*time.Second), lock.WithNamespace(bare))
	b := e.mutex(e.cli, "x", lock.WithTTL(2*time.Second), lock.WithNamespace(e.ns))
	if got, want := a.Prefix(), e.ns+"mutex/x/"; got != want {
		t.Errorf("Prefix() = %q, want %q", got, want)
	}
	if got, want := lock.KeyPrefix(bare, lock.KindMutex, "x"), e.ns+"mutex/x/"; got != want {
		t.Errorf("KeyPrefix = %q, want %q", got, want)
	}
	h := mustLock(t, a)
	if !strings.HasPrefix(h.Token().Key, e.ns+"mutex/x/") {
		t.Errorf("key %q is not under %q", h.Token().Key, e.ns+"mutex/x/")
	}
	if _, err := b.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Errorf("TryLock with namespace %q while %q holds: %v, want ErrLocked", e.ns, bare, err)
	}
	st, err := lock.Inspect(ctxT(t, 5*time.Second), e.cli, bare, "x")
	if err != nil {
		t.Fatal(err)
	}
	if ks := st.Lock(lock.KindMutex).Keys; len(ks) != 1 || ks[0].Key != h.Token().Key || !ks[0].Holding {
		t.Errorf("Inspect under %q: %+v, want the one holder %s", bare, ks, h.Token().Key)
	}
	toks, err := lock.RequestRelease(ctxT(t, 5*time.Second), e.cli, bare, lock.KindMutex, "x", "test")
	if err != nil || len(toks) != 1 || toks[0] != h.Token() {
		t.Fatalf("RequestRelease under %q: %v, %v", bare, toks, err)
	}
	waitClosed(t, h.ReleaseRequested(), 5*time.Second, "ReleaseRequested")
	mustUnlock(t, h)
}
