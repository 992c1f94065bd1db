package authtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/lease"
)

const authenticate = "/etcdserverpb.Auth/Authenticate"

// TestLoginPerRenewal pins down what the README says of password logins:
// clientv3 logs in again (an Authenticate request, a bcrypt check and a
// raft write at the server) for every stream it opens, so the lease keeper
// of this module's locks and elections renews over one stream of its own,
// and logs in once for all its renewals; a client that logs in by its
// certificate's common name sends no Authenticate at all.
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
	const renewals = 5
	for _, tc := range []struct {
		name   string
		cfg    func(*clientv3.Config)
		logins int
	}{
		{"password", func(cfg *clientv3.Config) { cfg.Username, cfg.Password = "app", "pw" }, 1},
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
		k := lease.Start(cli, g.ID, lease.Config{TTL: 30 * time.Second, Sent: time.Now()}) // next renewal due in 10 s
		for i := range renewals {
			if err := renewNow(ctx, k); err != nil {
				t.Fatalf("%s: renewal %d: %v", tc.name, i+1, err)
			}
		}
		k.Stop()
		if got := counter.Since(before)[authenticate]; got > tc.logins {
			t.Errorf("%s: %d logins for %d renewals, want at most %d", tc.name, got, renewals, tc.logins)
		}
		if _, err := cli.Revoke(ctx, g.ID); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		cli.Close()
	}
	integration.RequireEmpty(t, root, "")
}

// renewNow has k renew at once and waits for the renewal: its deadline,
// timed from the send, moves past the one before.
func renewNow(ctx context.Context, k *lease.Keeper) error {
	before, _ := k.Deadline()
	k.Check()
	for {
		if d, _ := k.Deadline(); d.After(before) {
			return nil
		}
		if err := k.Gone(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}
