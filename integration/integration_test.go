package integration_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/integration"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMain(m *testing.M) { integration.Main(m) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, cli *clientv3.Client, k, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, k, v); err != nil {
		t.Fatalf("put %q: %v", k, err)
	}
}

// putRetry puts until it succeeds: a request that a client had sent to a
// member that stops fails, and clientv3 does not retry non-idempotent ones.
func putRetry(t *testing.T, cli *clientv3.Client, k, v string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Put(ctx, k, v)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("put %q: %v", k, err)
		}
		t.Logf("put %q: %v (retrying)", k, err)
		time.Sleep(10 * time.Millisecond)
	}
}

func mustGet(t *testing.T, cli *clientv3.Client, k string, opts ...clientv3.OpOption) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, k, opts...)
	if err != nil {
		t.Fatalf("get %q: %v", k, err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("get %q: %d kvs, want 1", k, len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value)
}

func unixPath(t *testing.T, ep string) string {
	t.Helper()
	if !strings.HasPrefix(ep, "unix:///") {
		t.Fatalf("endpoint %q is not an absolute unix socket URL", ep)
	}
	p := strings.TrimPrefix(ep, "unix://")
	if len(p) >= 100 {
		t.Errorf("socket path %q is %d bytes, want < 100", p, len(p))
	}
	return p
}

func TestServerPutGet(t *testing.T) {
	start := time.Now()
	s := integration.NewServer(t)
	took := time.Since(start)
	// Logged, not asserted: a test does not judge wall-clock speed.
	t.Logf("single member (fsync on) ready in %v", took)
	eps := s.Endpoints()
	if len(eps) != 1 {
		t.Fatalf("Endpoints() = %v, want one", eps)
	}
	unixPath(t, eps[0])

	cli := s.Client(t)
	mustPut(t, cli, "k", "v")
	if got := mustGet(t, cli, "k"); got != "v" {
		t.Fatalf("get k = %q, want v", got)
	}
	if s.EtcdServer() == nil {
		t.Fatal("EtcdServer() = nil for a running server")
	}

	// The single member restarts on the same endpoint with its data.
	if err := s.Member().Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Member().Restart(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, cli, "k"); got != "v" {
		t.Fatalf("after restart: get k = %q, want v", got)
	}
}

func TestNewServerFailureFailsTest(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := integration.StartServer(integration.WithDataDir(notDir)); err == nil {
		s.Close()
		t.Fatal("StartServer with a file as data dir succeeded")
	} else {
		t.Logf("StartServer: %v", err)
	}

	rec := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		integration.NewServer(rec, integration.WithDataDir(notDir))
	}()
	<-done
	if len(rec.fatals) != 1 {
		t.Fatalf("NewServer with a file as data dir: Fatalf calls %q, want one", rec.fatals)
	}
	// The server's cleanup (registered with t) closes what was started;
	// Main's leak check would catch leftovers.
}

func TestServerWithoutFsyncStartup(t *testing.T) {
	start := time.Now()
	s := integration.NewServer(t, integration.WithoutFsync())
	t.Logf("single member (fsync off) ready in %v", time.Since(start))
	mustPut(t, s.Client(t), "k", "v")
}

func TestStartServerCloseRemovesDirs(t *testing.T) {
	s, err := integration.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	sock := unixPath(t, s.Endpoint())
	dataDir := s.Member().DataDir()
	cli, err := s.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, cli, "k", "v")
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, p := range []string{filepath.Dir(sock), dataDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Close (stat: %v)", p, err)
		}
	}
	if s.EtcdServer() != nil {
		t.Error("EtcdServer() != nil after Close")
	}
}

func TestServerTCPClientURLAndDataDir(t *testing.T) {
	dir := t.TempDir()
	s := integration.NewServer(t, integration.WithClientURL("http://127.0.0.1:0"), integration.WithDataDir(dir))
	ep := s.Endpoint()
	if !strings.HasPrefix(ep, "http://127.0.0.1:") || strings.HasSuffix(ep, ":0") {
		t.Fatalf("Endpoint() = %q, want http://127.0.0.1:<bound port>", ep)
	}
	mustPut(t, s.Client(t), "k", "v")
	if _, err := os.Stat(filepath.Join(dir, "member")); err != nil {
		t.Fatalf("data dir not used: %v", err)
	}
}

func TestClusterStopRestartKeepsData(t *testing.T) {
	start := time.Now()
	c := integration.NewCluster(t, 3)
	took := time.Since(start)
	t.Logf("3 members (fsync on) ready with a leader in %v", took)
	ctx := ctxT(t, 20*time.Second)
	lead, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ms := c.Members()
	if len(ms) != 3 || len(c.Endpoints()) != 3 {
		t.Fatalf("got %d members, %d endpoints, want 3", len(ms), len(c.Endpoints()))
	}
	for _, m := range ms {
		unixPath(t, m.Endpoint())
	}
	cli := c.Client(t)
	mustPut(t, cli, "k1", "v1")

	// Stop a follower, write without it, restart it: it has its old data
	// from disk and catches up on the rest.
	f := (lead + 1) % 3
	ep := ms[f].Endpoint()
	if err := ms[f].Stop(); err != nil {
		t.Fatal(err)
	}
	if ms[f].EtcdServer() != nil || ms[f].Running() {
		t.Fatal("stopped member still running")
	}
	putRetry(t, cli, "k2", "v2")
	restart := time.Now()
	if err := ms[f].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("follower restarted and ready in %v", time.Since(restart))
	if got := ms[f].Endpoint(); got != ep {
		t.Fatalf("endpoint changed across restart: %q -> %q", ep, got)
	}
	if err := ms[f].Restart(ctx); err == nil {
		t.Fatal("Restart of a running member succeeded")
	}
	one, err := ms[f].NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if got := mustGet(t, one, "k1", clientv3.WithSerializable()); got != "v1" {
		t.Fatalf("restarted member: k1 = %q", got)
	}
	if got := mustGet(t, one, "k2"); got != "v2" { // linearizable: caught up
		t.Fatalf("restarted member: k2 = %q", got)
	}

	// Stop the leader: the others elect a new one; its restart keeps data.
	if err := ms[lead].Stop(); err != nil {
		t.Fatal(err)
	}
	newLead, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if newLead == lead {
		t.Fatalf("leader %d still leads after Stop", lead)
	}
	putRetry(t, cli, "k3", "v3")
	if err := ms[lead].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k1", "k2", "k3"} {
		mustGet(t, cli, k)
	}
}

func TestClusterIsolateHealMoveLeader(t *testing.T) {
	c := integration.NewCluster(t, 3, integration.WithoutFsync())
	ctx := ctxT(t, 20*time.Second)
	lead, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cli := c.Client(t)
	mustPut(t, cli, "k", "v")

	c.Isolate(lead)
	start := time.Now()
	var newLead int
	for {
		if newLead, err = c.WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
		if newLead != lead {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("isolated leader %d replaced by %d in %v", lead, newLead, time.Since(start))
	// The isolated member cannot serve linearizable reads.
	iso, err := c.Members()[lead].NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer iso.Close()
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = iso.Get(rctx, "k")
	cancel()
	if err == nil {
		t.Fatal("linearizable read from an isolated member succeeded")
	}

	c.Heal(lead)
	if err := c.MoveLeader(ctx, lead); err != nil {
		t.Fatal(err)
	}
	if got, err := c.WaitLeader(ctx); err != nil || got != lead {
		t.Fatalf("after MoveLeader(%d): leader %d, %v", lead, got, err)
	}
	mustGet(t, iso, "k")
}

func TestStartClusterClose(t *testing.T) {
	c, err := integration.StartCluster(1)
	if err != nil {
		t.Fatal(err)
	}
	peer := strings.TrimPrefix(c.Members()[0].PeerURL(), "unix://")
	if _, err := os.Stat(peer); err != nil {
		t.Fatalf("peer socket %s: %v", peer, err)
	}
	cli, err := c.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, cli, "k", "v")
	cli.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(peer); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("peer socket %s still exists after Close (stat: %v)", peer, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func proxied(t *testing.T) (*integration.Proxy, *clientv3.Client) {
	t.Helper()
	s := integration.NewServer(t, integration.WithoutFsync())
	p := integration.NewProxy(t, s.Endpoint())
	unixPath(t, p.Endpoint())
	cli, err := s.NewClient(func(cfg *clientv3.Config) { cfg.Endpoints = []string{p.Endpoint()} })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	mustPut(t, cli, "k", "v")
	return p, cli
}

func getWithin(cli *clientv3.Client, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := cli.Get(ctx, "k")
	return err
}

func TestProxyPause(t *testing.T) {
	p, cli := proxied(t)
	p.Pause()
	if err := getWithin(cli, 300*time.Millisecond); err == nil {
		t.Fatal("Get through a paused proxy succeeded")
	} else {
		t.Logf("paused: %v", err)
	}
	p.Unpause()
	if err := getWithin(cli, 300*time.Millisecond); err != nil {
		t.Fatalf("Get after Unpause: %v", err)
	}
}

func TestProxyBlackhole(t *testing.T) {
	p, cli := proxied(t)
	p.Blackhole()
	if err := getWithin(cli, 300*time.Millisecond); err == nil {
		t.Fatal("Get through a blackholed proxy succeeded")
	} else {
		t.Logf("blackholed: %v", err)
	}
	p.Unblackhole()
	// The dropped bytes may have broken the HTTP/2 connection; the client
	// then reconnects.
	start := time.Now()
	var err error
	for attempt := 1; time.Since(start) < 15*time.Second; attempt++ {
		if err = getWithin(cli, 300*time.Millisecond); err == nil {
			t.Logf("Get succeeded %v after Unblackhole (attempt %d)", time.Since(start), attempt)
			return
		}
	}
	t.Fatalf("Get after Unblackhole: %v", err)
}

func TestProxyCloseWithoutClients(t *testing.T) {
	s := integration.NewServer(t, integration.WithoutFsync())
	p, err := integration.StartProxy(s.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	sock := unixPath(t, p.Endpoint())
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(sock)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("proxy directory still exists (stat: %v)", err)
	}
}

// recordingTB records Errorf and Fatalf calls instead of failing the test;
// Fatalf ends the calling goroutine like testing's.
type recordingTB struct {
	testing.TB
	mu     sync.Mutex
	errs   []string
	fatals []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	runtime.Goexit()
}

func TestSharedNamespaceRequireEmpty(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := range 4 {
		t.Run(fmt.Sprint("sub", i), func(t *testing.T) {
			t.Parallel()
			s := integration.Shared(t)
			if s2 := integration.Shared(t); s2 != s {
				t.Fatal("Shared returned two servers")
			}
			cli := s.Client(t)
			ns := integration.Namespace(t)
			mu.Lock()
			for other := range seen {
				if strings.HasPrefix(other, ns) || strings.HasPrefix(ns, other) {
					t.Errorf("namespaces %q and %q overlap", ns, other)
				}
			}
			seen[ns] = true
			mu.Unlock()

			integration.RequireEmpty(t, cli, ns)
			mustPut(t, cli, ns+"a", "1")
			mustPut(t, cli, ns+"b", "2")

			rec := &recordingTB{TB: t}
			integration.RequireEmpty(rec, cli, ns)
			if len(rec.fatals) != 0 || len(rec.errs) != 1 || !strings.Contains(rec.errs[0], ns+"a") || !strings.Contains(rec.errs[0], ns+"b") {
				t.Fatalf("RequireEmpty with keys left: errors %q, want one listing both keys", rec.errs)
			}
			t.Logf("RequireEmpty reported: %s", rec.errs[0])

			ctx := ctxT(t, 5*time.Second)
			if _, err := cli.Delete(ctx, ns, clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			integration.RequireEmpty(t, cli, ns)
		})
	}
}

func TestNamespaceNoNesting(t *testing.T) {
	parent := integration.Namespace(t)
	var child string
	t.Run("1", func(t *testing.T) { child = integration.Namespace(t) })
	if strings.HasPrefix(child, parent) || strings.HasPrefix(parent, child) {
		t.Fatalf("namespaces %q and %q overlap", parent, child)
	}
	if !strings.HasPrefix(parent, "t/TestNamespaceNoNesting/") || !strings.HasSuffix(parent, "/") {
		t.Fatalf("Namespace = %q", parent)
	}
	if strings.Count(child, "/") != 3 {
		t.Fatalf("subtest namespace %q has a nested name", child)
	}
}

func TestRequireEmptyReadError(t *testing.T) {
	t.Parallel()
	s := integration.NewServer(t, integration.WithoutFsync())
	cli, err := s.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	cli.Close()
	rec := &recordingTB{TB: t}
	integration.RequireEmpty(rec, cli, "x/")
	if len(rec.errs) != 1 {
		t.Fatalf("RequireEmpty with a closed client: errors %q, want one", rec.errs)
	}
}

// HardStop while clients read and write must not crash the process: the
// member stops serving before its storage closes. Restart then serves the
// data written before.
func TestHardStopUnderLoad(t *testing.T) {
	s := integration.NewServer(t, integration.WithoutFsync())
	cli := s.Client(t)
	mustPut(t, cli, "k", "v")
	for round := range 4 { // each round waits about 1 s for the client to reconnect
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					rctx, rcancel := context.WithTimeout(ctx, 200*time.Millisecond)
					if i%2 == 0 {
						_, _ = cli.Get(rctx, "k", clientv3.WithSerializable())
					} else {
						_, _ = cli.Put(rctx, fmt.Sprintf("w%d", i), "x")
					}
					rcancel()
				}
			}()
		}
		time.Sleep(20 * time.Millisecond) // requests in flight
		if err := s.Member().HardStop(); err != nil {
			t.Fatal(err)
		}
		cancel()
		wg.Wait()
		if err := s.Member().Restart(ctxT(t, 10*time.Second)); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}

		if got := mustGet(t, cli, "k"); got != "v" {
			t.Fatalf("round %d: after restart: get k = %q, want v", round, got)
		}
	}
}
