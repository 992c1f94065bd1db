package integration_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
)

// checkSecured checks a server or cluster started WithTLS and WithAuth:
// its own client (root, with the client certificate) works; a client
// without a certificate, and one that does not trust the CA, cannot even
// read; a user of one prefix reads and writes under it and nowhere else;
// and a client with no user name is refused.
func checkSecured(t *testing.T, endpoints []string, files *integration.TLSFiles, root *clientv3.Client,
	newClient func(...func(*clientv3.Config)) (*clientv3.Client, error)) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	for _, ep := range endpoints {
		if !strings.HasPrefix(ep, "unixs:///") {
			t.Errorf("endpoint %q, want unixs:///...", ep)
		}
	}
	mustPut(t, root, "/root-only", "x")

	short := func(cfg *clientv3.Config) { cfg.DialTimeout = time.Second }
	for name, change := range map[string]func(*clientv3.Config){
		"no client certificate": func(cfg *clientv3.Config) {
			cfg.TLS.Certificates, cfg.TLS.GetClientCertificate = nil, nil
		},
		"CA not trusted": func(cfg *clientv3.Config) { cfg.TLS.RootCAs = nil },
	} {
		// With a user name, the client logs in as it starts: that fails
		// already.
		cli, err := newClient(short, change)
		if err != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = cli.Get(rctx, "/root-only")
		cancel()
		cli.Close()
		if err == nil {
			t.Errorf("%s: read succeeded, want a failure", name)
		}
	}

	if err := integration.AddPrefixUser(ctx, root, "alice", "pw", "/alice/"); err != nil {
		t.Fatal(err)
	}
	alice, err := newClient(func(cfg *clientv3.Config) { cfg.Username, cfg.Password = "alice", "pw" })
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	mustPut(t, alice, "/alice/k", "v")
	if got := mustGet(t, root, "/alice/k"); got != "v" {
		t.Errorf("root reads %q under alice's prefix, want v", got)
	}
	if _, err := alice.Put(ctx, "/alicex", "v"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("alice's put outside her prefix: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	if _, err := alice.Get(ctx, "/root-only"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("alice's read outside her prefix: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	// Without a user name, etcd takes the certificate's common name as
	// the user: no such user may read.
	anon, err := newClient(func(cfg *clientv3.Config) { cfg.Username, cfg.Password = "", "" })
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Get(ctx, "/alice/k"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("read without a user name: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	// A certificate whose common name is alice logs in as alice, without
	// a password.
	cert, key, err := files.ClientCert("alice")
	if err != nil {
		t.Fatal(err)
	}
	byCert, err := newClient(func(cfg *clientv3.Config) {
		cfg.Username, cfg.Password = "", ""
		tc, err := files.ClientConfigFor(cert, key)
		if err != nil {
			t.Error(err)
			return
		}
		cfg.TLS = tc
	})
	if err != nil {
		t.Fatal(err)
	}
	defer byCert.Close()
	if got := mustGet(t, byCert, "/alice/k"); got != "v" {
		t.Errorf("alice by certificate reads %q, want v", got)
	}
	if _, err := byCert.Get(ctx, "/root-only"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("alice by certificate reads outside her prefix: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
}

// TestServerTLSAuth checks a single server started WithTLS and WithAuth.
func TestServerTLSAuth(t *testing.T) {
	t.Parallel()
	srv := integration.NewServer(t, integration.WithTLS(), integration.WithAuth(), integration.WithoutFsync())
	checkSecured(t, srv.Endpoints(), srv.TLS(), srv.Client(t), srv.NewClient)
}

// TestClusterTLSAuth checks a three-member cluster started WithTLS and
// WithAuth, and that a member restarts with both.
func TestClusterTLSAuth(t *testing.T) {
	t.Parallel()
	c := integration.NewCluster(t, 3, integration.WithTLS(), integration.WithAuth(), integration.WithoutFsync())
	checkSecured(t, c.Endpoints(), c.TLS(), c.Client(t), c.NewClient)
	m := c.Member(1)
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := m.Restart(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, m.Client(t), "/root-only"); got != "x" {
		t.Errorf("restarted member reads %q, want x", got)
	}
}

// TestTLSClientURL checks WithTLS with an https client URL, and the
// refusal of a scheme that does not fit.
func TestTLSClientURL(t *testing.T) {
	t.Parallel()
	srv := integration.NewServer(t, integration.WithTLS(), integration.WithClientURL("https://127.0.0.1:0"), integration.WithoutFsync())
	if ep := srv.Endpoint(); !strings.HasPrefix(ep, "https://127.0.0.1:") || strings.HasSuffix(ep, ":0") {
		t.Errorf("endpoint %q, want https://127.0.0.1:<port>", ep)
	}
	mustPut(t, srv.Client(t), "/k", "v")
	for _, opts := range [][]integration.Option{
		{integration.WithTLS(), integration.WithClientURL("http://127.0.0.1:0")},
		{integration.WithClientURL("https://127.0.0.1:0")},
	} {
		if s, err := integration.StartServer(opts...); err == nil {
			s.Close()
			t.Errorf("StartServer with a client URL that does not fit WithTLS succeeded")
		}
	}
}
