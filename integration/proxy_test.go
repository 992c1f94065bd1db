package integration_test

import (
	"errors"
	"io"
	"net"
	"strings"
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
