package lock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// etcdMutex returns a Mutex in etcd's layout for prefix, closed at cleanup.
func (e *env) etcdMutex(cli *clientv3.Client, prefix string, opts ...lock.Option) *lock.Mutex {
	e.t.Helper()
	opts = append([]lock.Option{lock.WithNamespace(e.ns), lock.WithTTL(2 * time.Second)}, opts...)
	m, err := lock.NewEtcdMutex(cli, prefix, opts...)
	if err != nil {
		e.t.Fatalf("NewEtcdMutex: %v", err)
	}
	e.t.Cleanup(func() {
		if err := m.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
	return m
}

// The keys are etcd's: "<prefix>/<lease hex>" on the hold's lease, and an
// etcd Mutex that asks after an etcdlock hold waits for it, and the other
// way round.
func TestEtcdMutexKeyLayout(t *testing.T) {
	e := newEnv(t)
	pfx := e.ns + "layout"
	m := e.etcdMutex(e.cli, pfx)
	h := mustLock(t, m)
	if want := fmt.Sprintf("%s/%x", pfx, int64(h.Lease())); h.Token().Key != want {
		t.Fatalf("key %s, want etcd's %s", h.Token().Key, want)
	}
	s := newTestSession(t, e.client())
	em := concurrency.NewMutex(s, pfx)
	if err := em.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("etcd TryLock while etcdlock holds = %v, want ErrLocked", err)
	}
	mustUnlock(t, h)
	if err := em.Lock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock while etcd's Mutex holds = %v, want ErrLocked", err)
	}
	got := make(chan *lock.Hold, 1)
	go func() {
		h, err := m.Lock(ctxT(t, 10*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- h
	}()
	waitKeys(t, e.cli, pfx+"/", 2)
	if err := em.Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if h := <-got; h != nil {
		mustUnlock(t, h)
	}
}

// One key per lease and name: Lock calls through one Mutex in etcd's
// layout take turns in-process, never two keys or a shared key.
func TestEtcdMutexOneKeyPerLease(t *testing.T) {
	e := newEnv(t)
	pfx := e.ns + "one"
	m := e.etcdMutex(e.cli, pfx)
	var inside, overlaps int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				h, err := m.Lock(ctxT(t, 10*time.Second))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				inside++
				if inside > 1 {
					overlaps++
				}
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				inside--
				mu.Unlock()
				if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if overlaps > 0 {
		t.Fatalf("%d overlapping holds through one Mutex", overlaps)
	}
	if _, err := m.TryLock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("TryLock after the turns: %v", err)
	}
}

// What the layout cannot do is refused.
func TestEtcdMutexRefuses(t *testing.T) {
	e := newEnv(t)
	if _, err := lock.NewEtcdMutex(e.cli, e.ns+"x", lock.WithNamespace(e.ns), lock.WithMinHold(time.Second)); !errors.Is(err, lock.ErrInvalidOption) {
		t.Fatalf("with a minimum hold: %v, want ErrInvalidOption", err)
	}
	if _, err := lock.NewEtcdMutex(e.cli, "", lock.WithNamespace(e.ns)); !errors.Is(err, lock.ErrInvalidName) {
		t.Fatalf("empty prefix: %v, want ErrInvalidName", err)
	}
	if _, err := lock.NewEtcdMutex(e.cli, "a", lock.WithNamespace("a/b/")); !errors.Is(err, lock.ErrInvalidOption) {
		t.Fatalf("namespace under the prefix: %v, want ErrInvalidOption", err)
	}
	m := e.etcdMutex(e.cli, e.ns+"x")
	if _, err := lock.NewMultiLock(lock.MutexPart(m)); !errors.Is(err, lock.ErrInvalidOption) {
		t.Fatalf("in a MultiLock: %v, want ErrInvalidOption", err)
	}
}

// fleetLog records the critical sections of a mixed fleet in etcd, so that
// holders in other processes (etcdctl's child) record theirs too: entering
// is a compare-and-swap of "inside" from "free" to the holder's name that
// also records the grant (the holder key's create revision) at the Txn's
// revision; a failed swap records an overlap.
type fleetLog struct {
	cli *clientv3.Client
	dir string
}

func (f fleetLog) enter(ctx context.Context, who string, rev int64) error {
	_, err := f.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(f.dir+"inside"), "=", "free")).
		Then(clientv3.OpPut(f.dir+"inside", who), clientv3.OpPut(fmt.Sprintf("%sgrants/%020d", f.dir, rev), who)).
		Else(clientv3.OpPut(fmt.Sprintf("%soverlap/%s-%d", f.dir, who, rev), "entered while held")).Commit()
	return err
}

func (f fleetLog) exit(ctx context.Context, who string, rev int64) error {
	_, err := f.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(f.dir+"inside"), "=", who)).
		Then(clientv3.OpPut(f.dir+"inside", "free")).
		Else(clientv3.OpPut(fmt.Sprintf("%soverlap/%s-%d-exit", f.dir, who, rev), "left while another held")).Commit()
	return err
}

// section runs a critical section of holder who with the key of create
// revision rev.
func (f fleetLog) section(ctx context.Context, who string, rev int64) error {
	if err := f.enter(ctx, who, rev); err != nil {
		return err
	}
	time.Sleep(2 * time.Millisecond) // work, giving overlaps a chance
	return f.exit(ctx, who, rev)
}

// TestEtcdctlChild is the command that "etcdctl lock" runs in
// TestMixedFleet: a critical section recorded in the fleet's log. It does
// nothing unless run so.
func TestEtcdctlChild(t *testing.T) {
	eps, dir := os.Getenv("ETCDLOCK_TEST_ENDPOINTS"), os.Getenv("ETCDLOCK_TEST_FLEET")
	if eps == "" {
		return
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(eps, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := ctxT(t, 10*time.Second)
	key := os.Getenv("ETCD_LOCK_KEY") // set by etcdctl lock
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("etcdctl's key %q: %v %v", key, resp, err)
	}
	if err := (fleetLog{cli, dir}).section(ctx, "etcdctl", resp.Kvs[0].CreateRevision); err != nil {
		t.Fatal(err)
	}
}

// etcdctlPath builds the real etcdctl at the version pinned in
// internal/tools/etcdctl (etcd's, as in go.mod), or takes $ETCDCTL.
func etcdctlPath(t *testing.T) string {
	if p := os.Getenv("ETCDCTL"); p != "" {
		return p
	}
	out := filepath.Join(t.TempDir(), "etcdctl")
	cmd := exec.Command("go", "build", "-o", out, "go.etcd.io/etcd/etcdctl/v3")
	cmd.Dir = filepath.Join("..", "internal", "tools", "etcdctl")
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building etcdctl: %v\n%s", err, b)
	}
	return out
}

// A fleet in the middle of a migration: etcdlock Mutexes in etcd's layout,
// etcd's own concurrency.Mutex and the real "etcdctl lock" on one name.
// No two critical sections overlap, and the grants come in the order of
// the holders' keys' create revisions (FIFO), whoever asked.
func TestMixedFleet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	etcdctl := etcdctlPath(t)
	pfx := e.ns + "fleet-lock"
	log := fleetLog{e.cli, e.ns + "fleet/"}
	ctx := ctxT(t, 2*time.Minute)
	if _, err := e.cli.Put(ctx, log.dir+"inside", "free"); err != nil {
		t.Fatal(err)
	}
	const rounds, ctlRounds = 12, 4
	var wg sync.WaitGroup
	for i := range 2 {
		m := e.etcdMutex(e.client(), pfx)
		who := fmt.Sprintf("etcdlock-%d", i)
		wg.Go(func() {
			for range rounds {
				h, err := m.Lock(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if err := log.section(ctx, who, h.Token().Revision); err != nil {
					t.Error(err)
				}
				if err := h.Unlock(ctx); err != nil {
					t.Errorf("%s: Unlock: %v", who, err)
				}
			}
		})
	}
	for i := range 2 {
		cli := e.client()
		s := newTestSession(t, cli)
		em := concurrency.NewMutex(s, pfx)
		who := fmt.Sprintf("concurrency-%d", i)
		wg.Go(func() {
			for range rounds {
				if err := em.Lock(ctx); err != nil {
					t.Error(err)
					return
				}
				resp, err := cli.Get(ctx, em.Key())
				if err != nil || len(resp.Kvs) == 0 {
					t.Errorf("%s: own key: %v %v", who, resp, err)
					return
				}
				if err := log.section(ctx, who, resp.Kvs[0].CreateRevision); err != nil {
					t.Error(err)
				}
				if err := em.Unlock(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	eps := strings.Join(integration.Shared(t).Endpoints(), ",")
	wg.Go(func() {
		for range ctlRounds {
			cmd := exec.CommandContext(ctx, etcdctl, "--endpoints="+eps, "lock", "--ttl=5", pfx, "--", self, "-test.run=^TestEtcdctlChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "ETCDLOCK_TEST_ENDPOINTS="+eps, "ETCDLOCK_TEST_FLEET="+log.dir)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("etcdctl lock: %v\n%s", err, b)
				return
			}
		}
	})
	wg.Wait()

	resp, err := e.cli.Get(ctx, log.dir+"overlap/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		t.Errorf("overlap: %s: %s", kv.Key, kv.Value)
	}
	resp, err = e.cli.Get(ctx, log.dir+"grants/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if want := 4*rounds + ctlRounds; len(resp.Kvs) != want {
		t.Errorf("%d grants recorded, want %d", len(resp.Kvs), want)
	}
	// In the order they were recorded (one at a time, by the check above),
	// the grants' key revisions grow: FIFO across the three clients.
	kvs := slices.Clone(resp.Kvs)
	slices.SortFunc(kvs, func(a, b *mvccpb.KeyValue) int { return int(a.ModRevision - b.ModRevision) })
	whos := map[string]int{}
	for i, kv := range kvs {
		whos[string(kv.Value)]++
		if i > 0 && string(kv.Key) < string(kvs[i-1].Key) {
			t.Errorf("grant %d (%s, key revision %s) after %s: not FIFO", i, kv.Value, kv.Key[len(log.dir)+len("grants/"):], kvs[i-1].Key[len(log.dir)+len("grants/"):])
		}
	}
	if whos["etcdctl"] != ctlRounds {
		t.Errorf("grants by holder: %v", whos)
	}
	if _, err := e.cli.Delete(ctx, log.dir, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	waitKeys(t, e.cli, pfx+"/", 0)
}
