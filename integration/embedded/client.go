package embedded

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Client settings used by Client and NewClient.
const (
	// ClientDialTimeout is the DialTimeout of the clients made here.
	ClientDialTimeout = 5 * time.Second
	// ClientKeepAliveTime is the gRPC keep-alive ping interval of the
	// clients made here; gRPC does not allow less than 10 s.
	ClientKeepAliveTime = 10 * time.Second
	// ClientKeepAliveTimeout is how long a client waits for a ping answer
	// before it closes the connection and reconnects.
	ClientKeepAliveTimeout = 2 * time.Second
)

// newClient builds a client for endpoints with the package defaults and,
// for members started with srv (nil for none), its client certificate and
// root login, then applies cfgs in order.
func newClient(endpoints []string, srv *config, cfgs []func(*clientv3.Config)) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          ClientDialTimeout,
		DialKeepAliveTime:    ClientKeepAliveTime,
		DialKeepAliveTimeout: ClientKeepAliveTimeout,
		Logger:               zap.NewNop(),
	}
	if srv != nil && srv.tlsFiles != nil {
		tlsCfg, err := srv.tlsFiles.ClientConfig()
		if err != nil {
			return nil, err
		}
		cfg.TLS = tlsCfg
	}
	if srv != nil && srv.auth {
		cfg.Username, cfg.Password = RootUser, RootPassword
	}
	for _, f := range cfgs {
		if f != nil {
			f(&cfg)
		}
	}
	return clientv3.New(cfg)
}

// testClient makes a client closed at tb cleanup, failing tb on error.
func testClient(tb TB, endpoints []string, srv *config, cfg ...func(*clientv3.Config)) *clientv3.Client {
	tb.Helper()
	cli, err := newClient(endpoints, srv, cfg)
	if err != nil {
		tb.Fatalf("integration: creating client for %v: %v", endpoints, err)
	}
	tb.Cleanup(func() {
		if err := cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			tb.Errorf("integration: closing client: %v", err)
		}
	})
	return cli
}
