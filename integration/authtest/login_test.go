package authtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
)

const authenticate = "/etcdserverpb.Auth/Authenticate"

// TestLoginPerRenewal pins down what the README says of password logins:
// clientv3 logs in again (an Authenticate request, a bcrypt check and a
// raft write at the server) for every stream it opens, and each lease
// renewal of this module's locks and elections is a new stream; a client
// that logs in by its certificate's common name sends no Authenticate.
func TestLoginPerRenewal(t *testing.T) {
	t.Parallel()
	s := integration.NewServer(t, integration.WithTLS(), integration.WithAuth(), integration.WithoutFsync())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := s.Client(t)
	if err := integration.AddPrefixUser(ctx, root, "app", "pw", "app/"); err != nil {
		t.Fatal(err)
	}
	cert, key, err := s.TLS().ClientCert("app")
	if err != nil {
		t.Fatal(err)
	}
	const renewals = 3
	for _, tc := range []struct {
		name   string
		cfg    func(*clientv3.Config)
		logins int
	}{
		{"password", func(cfg *clientv3.Config) { cfg.Username, cfg.Password = "app", "pw" }, renewals},
		{"certificate", func(cfg *clientv3.Config) {
			cfg.Username, cfg.Password = "", ""
			tc, err := s.TLS().ClientConfigFor(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			cfg.TLS = tc
		}, 0},
	} {
		var counter integration.RPCCounter
		cli, err := s.NewClient(tc.cfg, func(cfg *clientv3.Config) {
			cfg.DialOptions = append(cfg.DialOptions, counter.DialOptions()...)
		})
		if err != nil {
			t.Fatal(err)
		}
		g, err := cli.Grant(ctx, 30)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if _, err := cli.Put(ctx, "app/k", "", clientv3.WithLease(g.ID)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		before := counter.Snapshot()
		for range renewals {
			if _, err := cli.KeepAliveOnce(ctx, g.ID); err != nil {
				t.Fatalf("%s: renewal: %v", tc.name, err)
			}
		}
		if got := counter.Since(before)[authenticate]; got != tc.logins {
			t.Errorf("%s: %d logins for %d renewals, want %d", tc.name, got, renewals, tc.logins)
		}
		if _, err := cli.Revoke(ctx, g.ID); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		cli.Close()
	}
	integration.RequireEmpty(t, root, "")
}
