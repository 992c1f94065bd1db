package lease_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/lease"
)

// keepAliveCount counts a client's lease keep-alive streams and the
// requests sent on them.
type keepAliveCount struct{ streams, requests atomic.Int64 }

func (c *keepAliveCount) option(cfg *clientv3.Config) {
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainStreamInterceptor(
		func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil || !strings.HasSuffix(method, "/LeaseKeepAlive") {
				return s, err
			}
			c.streams.Add(1)
			return &countedStream{ClientStream: s, c: c}, nil
		}))
}

type countedStream struct {
	grpc.ClientStream
	c *keepAliveCount
}

func (s *countedStream) SendMsg(m any) error {
	s.c.requests.Add(1)
	return s.ClientStream.SendMsg(m)
}

// renewNow has k renew at once and waits for the renewal: its deadline,
// timed from the send, moves past the one before.
func renewNow(t *testing.T, k *lease.Keeper) {
	t.Helper()
	before, _ := k.Deadline()
	k.Check()
	stop := time.Now().Add(10 * time.Second) // a hang detector
	for {
		if d, _ := k.Deadline(); d.After(before) {
			return
		}
		if time.Now().After(stop) {
			t.Fatal("no renewal within 10s of a Check")
		}
		time.Sleep(time.Millisecond)
	}
}

// A keeper sends its renewals over one keep-alive stream, one request per
// renewal, and opens another stream when that one breaks.
func TestRenewalsShareOneStream(t *testing.T) {
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	var n keepAliveCount
	cli, err := srv.NewClient(func(c *clientv3.Config) { c.Endpoints = []string{p.Endpoint()} }, n.option)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	g, err := cli.Grant(ctxT(t, 5*time.Second), 60)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = srv.Client(t).Revoke(ctxT(t, 5*time.Second), g.ID) })
	k := lease.Start(cli, g.ID, lease.Config{TTL: 60 * time.Second, Sent: time.Now()}) // next renewal due in 20 s
	defer k.Stop()
	const renewals = 5
	for range renewals {
		renewNow(t, k)
	}
	if s, r := n.streams.Load(), n.requests.Load(); s != 1 || r != renewals {
		t.Fatalf("%d renewals took %d streams and %d requests, want 1 and %d", renewals, s, r, renewals)
	}
	// Break the connection under the stream, with a renewal in flight:
	// the blackhole drops it, and its end closes the connection. The
	// request is counted when the client sends it, which may be before its
	// bytes reach the proxy; the blackhole is held a while after, and a
	// break that dropped nothing (the renewal came back on the first
	// stream) is tried again.
	for attempt := 1; ; attempt++ {
		sent := n.requests.Load()
		p.Blackhole()
		before, _ := k.Deadline()
		k.Check()
		for n.requests.Load() == sent {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		p.Unblackhole()
		stop := time.Now().Add(20 * time.Second) // a hang detector
		for {
			if d, _ := k.Deadline(); d.After(before) {
				break
			}
			if time.Now().After(stop) {
				t.Fatal("no renewal after the connection broke")
			}
			time.Sleep(time.Millisecond)
		}
		s := n.streams.Load()
		if s == 1 && attempt < 3 {
			t.Logf("attempt %d: the blackhole dropped nothing; again", attempt)
			continue
		}
		if s != 2 {
			t.Fatalf("%d streams opened, want 2: one before the break and one after", s)
		}
		break
	}
	renewNow(t, k)
	if s := n.streams.Load(); s != 2 {
		t.Fatalf("%d streams opened, want 2", s)
	}
}
