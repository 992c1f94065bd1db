package authtest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

func TestMain(m *testing.M) { integration.Main(m) }

// secured is a server or cluster that requires TLS and a login.
type secured interface {
	Client(integration.TB) *clientv3.Client
	NewClient(...func(*clientv3.Config)) (*clientv3.Client, error)
}

// userClient returns a client of s logged in as user, closed at cleanup.
// The login at its start is a raft write: it is tried again, a few times,
// if the cluster's leader changed under it.
func userClient(t *testing.T, s secured, user, password string) *clientv3.Client {
	t.Helper()
	var cli *clientv3.Client
	var err error
	for range 5 {
		cli, err = s.NewClient(func(cfg *clientv3.Config) { cfg.Username, cfg.Password = user, password })
		if !errors.Is(err, rpctypes.ErrLeaderChanged) {
			break
		}
	}
	if err != nil {
		t.Fatalf("client of user %q: %v", user, err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// requireNoLeases fails t if any lease is left on the server.
func requireNoLeases(t *testing.T, root *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := root.Leases(ctx)
	if err != nil {
		t.Fatalf("listing leases: %v", err)
	}
	if len(resp.Leases) > 0 {
		t.Errorf("%d leases left behind", len(resp.Leases))
	}
}

func mustClose(t *testing.T, c interface{ Close() error }) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

// TestPrefixUserOverTLS runs a mutex, an RWMutex, a semaphore, an election
// and fenced commits as a user who may read and write the namespace only,
// over TLS with client certificates, on one server and on a three-member
// cluster (where followers forward lease renewals to the leader): holds
// exclude each other, a waiter (who watches) gets the lock when it is
// released, tokens grow, a stale token's commit is refused, and nothing is
// left behind, keys or leases.
func TestPrefixUserOverTLS(t *testing.T) {
	opts := []integration.Option{integration.WithTLS(), integration.WithAuth(), integration.WithoutFsync()}
	t.Run("server", func(t *testing.T) {
		t.Parallel()
		checkPrefixUser(t, integration.NewServer(t, opts...))
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		checkPrefixUser(t, integration.NewCluster(t, 3, opts...))
	})
}

func checkPrefixUser(t *testing.T, s secured) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := s.Client(t)
	const ns = "app/"
	if err := integration.AddPrefixUser(ctx, root, "app", "app-pw", ns); err != nil {
		t.Fatal(err)
	}
	c1, c2 := userClient(t, s, "app", "app-pw"), userClient(t, s, "app", "app-pw")

	// Mutex: exclusion, a waiter served on release, growing tokens, fencing.
	m1, err := lock.NewMutex(c1, "m", lock.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := lock.NewMutex(c2, "m", lock.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	h1, err := m1.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock as the prefix user: %v", err)
	}
	if _, err := m2.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Errorf("TryLock of a held mutex: %v, want ErrLocked", err)
	}
	var h2 *lock.Hold
	var err2 error
	var wg sync.WaitGroup
	wg.Go(func() { h2, err2 = m2.Lock(ctx) })
	integration.WaitKeyCount(t, root, m1.Prefix(), 2, 30*time.Second) // m2 waits
	if _, err := fencing.Commit(ctx, c1, h1.Token(), clientv3.OpPut(ns+"data", "1")); err != nil {
		t.Errorf("fenced commit of the holder: %v", err)
	}
	if err := h1.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err2 != nil {
		t.Fatalf("waiting Lock as the prefix user: %v", err2)
	}
	if !h2.Token().Newer(h1.Token()) {
		t.Errorf("token %v after %v, want a newer one", h2.Token(), h1.Token())
	}
	if _, err := fencing.Commit(ctx, c1, h1.Token(), clientv3.OpPut(ns+"data", "stale")); !errors.Is(err, fencing.ErrFenced) {
		t.Errorf("commit with the released token: %v, want ErrFenced", err)
	}
	if _, err := fencing.Commit(ctx, c2, h2.Token(), clientv3.OpDelete(ns+"data")); err != nil {
		t.Errorf("fenced commit of the new holder: %v", err)
	}
	if err := h2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	// RWMutex and semaphore: a hold each.
	rw, err := lock.NewRWMutex(c1, "rw", lock.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	rh, err := rw.RLock(ctx)
	if err != nil {
		t.Fatalf("RLock as the prefix user: %v", err)
	}
	if err := rh.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	sem, err := lock.NewSemaphore(c2, "sem", 2, lock.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := sem.Acquire(ctx, 1)
	if err != nil {
		t.Fatalf("Acquire as the prefix user: %v", err)
	}
	if err := sh.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	// Election: a leader, a candidate behind it that leads on resignation,
	// and an observer that sees both.
	e1, err := election.New(c1, "el", election.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	e2, err := election.New(c2, "el", election.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	octx, ocancel := context.WithCancel(ctx)
	seen := e2.Observe(octx)
	t1, err := e1.Campaign(ctx, "one")
	if err != nil {
		t.Fatalf("Campaign as the prefix user: %v", err)
	}
	var t2 *election.Term
	wg.Go(func() { t2, err2 = e2.Campaign(ctx, "two") })
	integration.WaitKeyCount(t, root, e1.Prefix(), 2, 30*time.Second)
	if err := t1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err2 != nil {
		t.Fatalf("second Campaign as the prefix user: %v", err2)
	}
	var values []string
	for l := range seen {
		if l.Value != "" && (len(values) == 0 || values[len(values)-1] != l.Value) {
			values = append(values, l.Value)
		}
		if l.Value == "two" {
			break
		}
	}
	ocancel()
	if len(values) != 2 || values[0] != "one" || values[1] != "two" {
		t.Errorf("observer saw leaders %q, want one then two", values)
	}
	if !t2.Token().Newer(t1.Token()) {
		t.Errorf("term token %v after %v, want a newer one", t2.Token(), t1.Token())
	}
	if err := t2.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []interface{ Close() error }{m1, m2, rw, sem, e1, e2} {
		mustClose(t, c)
	}
	integration.RequireEmpty(t, root, "")
	requireNoLeases(t, root)
}

// denied checks that err is want, returned while ctx still ran: the call
// gave up at the refusal instead of retrying until its context ended.
func denied(t *testing.T, ctx context.Context, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want an error matching %q", what, err, want)
	}
	if ctx.Err() != nil {
		t.Errorf("%s: returned only once its context ended", what)
	}
}

// checkRefused runs every kind of call on namespace "app/" through cli,
// which may not use it, and checks that each fails at once with an error
// matching want, and that nothing is left behind, keys or leases.
func checkRefused(t *testing.T, cli, root *clientv3.Client, want error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "app/"
	m, err := lock.NewMutex(cli, "m", lock.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Lock(ctx)
	denied(t, ctx, "Mutex.Lock", err, want)
	_, err = m.TryLock(ctx)
	denied(t, ctx, "Mutex.TryLock", err, want)
	rw, err := lock.NewRWMutex(cli, "rw", lock.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	_, err = rw.Lock(ctx)
	denied(t, ctx, "RWMutex.Lock", err, want)
	_, err = rw.RLock(ctx)
	denied(t, ctx, "RWMutex.RLock", err, want)
	sem, err := lock.NewSemaphore(cli, "sem", 3, lock.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	_, err = sem.Acquire(ctx, 1)
	denied(t, ctx, "Semaphore.Acquire", err, want)
	_, err = lock.Inspect(ctx, cli, ns, "m")
	denied(t, ctx, "Inspect", err, want)
	e, err := election.New(cli, "el", election.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Campaign(ctx, "v")
	denied(t, ctx, "Election.Campaign", err, want)
	_, err = e.Leader(ctx)
	denied(t, ctx, "Election.Leader", err, want)

	// A real holder's token, used by cli: refused, not fenced.
	rm, err := lock.NewMutex(root, "m", lock.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	h, err := rm.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fencing.Commit(ctx, cli, h.Token(), clientv3.OpPut(ns+"data", "x"))
	denied(t, ctx, "fencing.Commit", err, want)
	if err := h.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []interface{ Close() error }{m, rw, sem, e, rm} {
		mustClose(t, c)
	}
	integration.RequireEmpty(t, root, "")
	requireNoLeases(t, root)
}

// TestUserWithoutPermission: a user whose role covers another prefix gets
// rpctypes.ErrPermissionDenied from every call on the namespace, at once,
// over TLS.
func TestUserWithoutPermission(t *testing.T) {
	t.Parallel()
	s := integration.NewServer(t, integration.WithTLS(), integration.WithAuth(), integration.WithoutFsync())
	root := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := integration.AddPrefixUser(ctx, root, "other", "pw", "other/"); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, userClient(t, s, "other", "pw"), root, rpctypes.ErrPermissionDenied)
}

// TestNoUser: with authentication on and no user given, every call fails
// at once with rpctypes.ErrUserEmpty ("etcdserver: user name is empty").
func TestNoUser(t *testing.T) {
	t.Parallel()
	s := integration.NewServer(t, integration.WithAuth(), integration.WithoutFsync())
	checkRefused(t, userClient(t, s, "", ""), s.Client(t), rpctypes.ErrUserEmpty)
}

// TestNamespaceWithoutSlashUnderRBAC: a user whose role grants readwrite
// on "app/" only can lock, campaign and inspect with WithNamespace("app"),
// without the slash, which puts the keys under "app/"; and nothing is left
// behind.
func TestNamespaceWithoutSlashUnderRBAC(t *testing.T) {
	t.Parallel()
	s := integration.NewServer(t, integration.WithAuth(), integration.WithoutFsync())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := s.Client(t)
	if err := integration.AddPrefixUser(ctx, root, "app", "app-pw", "app/"); err != nil {
		t.Fatal(err)
	}
	cli := userClient(t, s, "app", "app-pw")
	m, err := lock.NewMutex(cli, "m", lock.WithNamespace("app"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := m.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock with namespace \"app\" as a user of \"app/\": %v", err)
	}
	if _, err := lock.Inspect(ctx, cli, "app", "m"); err != nil {
		t.Errorf("Inspect with namespace \"app\": %v", err)
	}
	if err := h.Unlock(ctx); err != nil {
		t.Error(err)
	}
	mustClose(t, m)
	el, err := election.New(cli, "e", election.WithNamespace("app"))
	if err != nil {
		t.Fatal(err)
	}
	term, err := el.Campaign(ctx, "v")
	if err != nil {
		t.Fatalf("Campaign with namespace \"app\" as a user of \"app/\": %v", err)
	}
	if err := term.Resign(ctx); err != nil {
		t.Error(err)
	}
	mustClose(t, el)
	integration.RequireEmpty(t, root, "app")
	requireNoLeases(t, root)
}
