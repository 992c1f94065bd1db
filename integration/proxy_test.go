package integration_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/integration"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Pausing twice and unpausing twice must leave no traffic held: the etcd
// proxy replaces its pause channel on every pause, so bytes held by the
// first pause would wait on a channel no Unpause closes.
func TestProxyPauseNests(t *testing.T) {
	p, cli := proxied(t)
	p.Pause()
	if err := getWithin(cli, 200*time.Millisecond); err == nil { // its bytes are held
		t.Fatal("Get through a paused proxy succeeded")
	}
	p.Pause()
	p.Unpause()
	if err := getWithin(cli, 200*time.Millisecond); err == nil {
		t.Fatal("Get succeeded after one Unpause of two Pauses")
	}
	p.Unpause()
	// Well under the client's keep-alive timeout (12 s), after which it
	// would reconnect and hide a connection held for good.
	if err := getWithin(cli, 3*time.Second); err != nil {
		t.Fatalf("Get after as many Unpauses as Pauses: %v", err)
	}
	p.Unpause() // unmatched: does nothing
	if err := getWithin(cli, 3*time.Second); err != nil {
		t.Fatalf("Get after an extra Unpause: %v", err)
	}
}

// readEOF reports what a read on c returns within d: io.EOF when the proxy
// closed the connection.
func readEOF(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return err
}

// A connection to the proxy while its target is down is closed at once
// (the client then retries), not left open and unanswered.
func TestProxyTargetDownClosesConnection(t *testing.T) {
	s := integration.NewServer(t, integration.WithoutFsync())
	p := integration.NewProxy(t, s.Endpoint())
	if err := s.Member().Stop(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", strings.TrimPrefix(p.Endpoint(), "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := readEOF(c, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("read from a proxy whose target is down: %v, want EOF", err)
	}
}

// Close cuts the connections through the proxy, idle or held, instead of
// waiting for the clients to close them.
func TestProxyCloseCutsConnections(t *testing.T) {
	s := integration.NewServer(t, integration.WithoutFsync())
	for _, pause := range []bool{false, true} {
		p, err := integration.StartProxy(s.Endpoint())
		if err != nil {
			t.Fatal(err)
		}
		cli, err := s.NewClient(func(cfg *clientv3.Config) { cfg.Endpoints = []string{p.Endpoint()} })
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		if err := getWithin(cli, 5*time.Second); err != nil { // connected
			t.Fatal(err)
		}
		if pause {
			p.Pause()
		}
		if err := p.Close(); err != nil {
			t.Fatalf("paused %v: Close with a client connected: %v", pause, err)
		}
		if err := getWithin(cli, 200*time.Millisecond); err == nil {
			t.Fatalf("paused %v: Get through a closed proxy succeeded", pause)
		}
	}
}

// getEventually retries a Get through cli for up to 15 s (each try 300 ms):
// after a blackhole the client may need to notice its broken connection
// and reconnect.
func getEventually(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := getWithin(cli, 300*time.Millisecond)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get after the last blackhole ended: %v", err)
		}
	}
}

// Blackholes nest like pauses: the end of one of two overlapping
// blackholes of a proxy leaves the traffic dropped, and the end of the
// last one lets it through again.
func TestProxyBlackholeNests(t *testing.T) {
	p, cli := proxied(t)
	p.Blackhole()
	p.Blackhole()
	p.Unblackhole()
	if err := getWithin(cli, 300*time.Millisecond); err == nil {
		t.Fatal("Get succeeded after one Unblackhole of two Blackholes")
	}
	p.Unblackhole()
	getEventually(t, cli)
	p.Unblackhole() // unmatched: does nothing
	if err := getWithin(cli, 3*time.Second); err != nil {
		t.Fatalf("Get after an extra Unblackhole: %v", err)
	}
}

// A client fault that starts and ends while another one holds the same
// proxy leaves that other fault in effect: BlackholeClient and
// DropClientRequests inside a Blackhole.
func TestClientBlackholesNest(t *testing.T) {
	p, cli := proxied(t)
	ctx := ctxT(t, 60*time.Second)

	p.Blackhole()
	if err := integration.BlackholeClient(ctx, 0, p); err != nil {
		t.Fatal(err)
	}
	if err := integration.DropClientRequests(ctx, 0, p); err != nil {
		t.Fatal(err)
	}
	if err := getWithin(cli, 300*time.Millisecond); err == nil {
		t.Fatal("Get succeeded while a blackhole was in effect, after nested client faults ended")
	}
	p.Unblackhole()
	getEventually(t, cli)
}

// A DelayClientResponses that starts and ends while another one delays the
// same proxy leaves the other's delay in effect until it ends.
func TestDelayClientResponsesNests(t *testing.T) {
	p, cli := proxied(t)
	ctx := ctxT(t, 60*time.Second)
	// The outer delay runs on its own goroutine; it is in effect once the
	// proxy reports its latency.
	const latency = 400 * time.Millisecond
	dctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := integration.DelayClientResponses(dctx, 10*time.Minute, latency, p); !errors.Is(err, context.Canceled) {
			t.Errorf("DelayClientResponses cancelled: %v, want context.Canceled", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for p.Server().LatencyRx() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("DelayClientResponses did not take effect in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := integration.DelayClientResponses(ctx, 0, 100*time.Millisecond, p); err != nil {
		t.Fatal(err)
	}
	if got := p.Server().LatencyRx(); got != latency {
		t.Errorf("response latency after a nested delay ended: %v, want %v", got, latency)
	}
	start := time.Now()
	if _, err := cli.Put(ctx, "k", "delayed"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < latency {
		t.Errorf("Put answered after %v, want at least the outer delay's %v", took, latency)
	}
	stop()
	wg.Wait()
	if got := p.Server().LatencyRx(); got != 0 {
		t.Errorf("response latency after every delay ended: %v, want 0", got)
	}
	if err := getWithin(cli, 5*time.Second); err != nil {
		t.Fatalf("Get after every delay ended: %v", err)
	}
}

// Requests dropped by BlackholeRequests stay dropped when a Blackhole
// that overlaps it ends, and never reach the server.
func TestProxyBlackholeRequestsNests(t *testing.T) {
	p, cli := proxied(t)
	p.BlackholeRequests()
	p.Blackhole()
	p.Unblackhole()
	p.BlackholeRequests()
	p.UnblackholeRequests()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := cli.Put(ctx, "k", "dropped")
	cancel()
	if err == nil {
		t.Fatal("Put succeeded while requests were dropped")
	}
	p.UnblackholeRequests()
	getEventually(t, cli)
	if got := mustGet(t, cli, "k"); got == "dropped" {
		t.Fatal("a dropped Put landed")
	}
}

// While several response delays are in effect the longest applies, and
// the end of one leaves the others in effect.
func TestProxyDelayResponsesNests(t *testing.T) {
	p, _ := proxied(t)
	const short, long = 100 * time.Millisecond, 400 * time.Millisecond
	for i, step := range []struct {
		do   func(time.Duration)
		d    time.Duration
		want time.Duration
	}{
		{p.DelayResponses, short, short},
		{p.DelayResponses, long, long},
		{p.DelayResponses, short, long},
		{p.UndelayResponses, long, short},
		{p.UndelayResponses, long, short}, // none left of that latency: nothing
		{p.UndelayResponses, short, short},
		{p.UndelayResponses, short, 0},
		{p.DelayResponses, 0, 0},
	} {
		step.do(step.d)
		if got := p.Server().LatencyRx(); got != step.want {
			t.Fatalf("step %d: response latency %v, want %v", i, got, step.want)
		}
	}
}
