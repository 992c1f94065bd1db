package embedded

import (
	"context"
	"maps"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// RPCCounter counts the gRPC calls a client starts, unary and streams, by
// full method name ("/etcdserverpb.KV/Txn"), including calls gRPC fails
// before sending: whatever the code under test asks etcd. Tests use it to
// check that a call sent nothing, or how many round trips it took. Its
// methods are safe for concurrent use.
type RPCCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// LeaseKeepAliveMethod is the lease renewal stream, which [RPCCounter.Since]
// leaves out: lease keepers send renewals in the background.
const LeaseKeepAliveMethod = "/etcdserverpb.Lease/LeaseKeepAlive"

func (c *RPCCounter) add(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[method]++
}

// Snapshot returns a copy of the counts so far, by method.
func (c *RPCCounter) Snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

// Since returns the calls started after before (a [RPCCounter.Snapshot]),
// by method, leaving out [LeaseKeepAliveMethod]; nil for none.
func (c *RPCCounter) Since(before map[string]int) map[string]int {
	var out map[string]int
	for k, v := range c.Snapshot() {
		if k == LeaseKeepAliveMethod {
			continue
		}
		if d := v - before[k]; d > 0 {
			if out == nil {
				out = make(map[string]int)
			}
			out[k] = d
		}
	}
	return out
}

// DialOptions returns the gRPC interceptors that count a client's calls in
// c; add them to clientv3.Config.DialOptions.
func (c *RPCCounter) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			c.add(method)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			c.add(method)
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

// CountingClient returns a new client of the server, as [Server.Client]
// does (closed at tb cleanup, tb failed if it cannot be made), and the
// counter of the calls it starts.
func (s *Server) CountingClient(tb TB) (*clientv3.Client, *RPCCounter) {
	tb.Helper()
	c := &RPCCounter{}
	cli := testClient(tb, s.Endpoints(), s.config(), func(cfg *clientv3.Config) {
		cfg.DialOptions = append(cfg.DialOptions, c.DialOptions()...)
	})
	return cli, c
}
