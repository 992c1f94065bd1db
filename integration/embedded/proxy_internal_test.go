package embedded

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if they leave goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// When a blackhole ends, the connections that lost bytes to it are closed,
// so that no client parses the bytes after the gap as frames (it
// reconnects instead). BlackholeRequests likewise.
func TestProxyDropEndClosesConnections(t *testing.T) {
	for _, tc := range []struct {
		name     string
		drop, up func(*Proxy)
	}{
		{"blackhole", (*Proxy).Blackhole, (*Proxy).Unblackhole},
		{"requests", (*Proxy).BlackholeRequests, (*Proxy).UnblackholeRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(t, WithoutFsync())
			p := NewProxy(t, s.Endpoint())
			raw, err := net.Dial("unix", strings.TrimPrefix(p.Endpoint(), "unix://"))
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			// The connection is through once the relay tracks both its legs.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
				p.mu.Lock()
				n := len(p.conns)
				p.mu.Unlock()
				if n == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d relay connections, want 2", n)
				}
			}
			tc.drop(p)
			if _, err := raw.Write([]byte("lost in the blackhole")); err != nil {
				t.Fatal(err)
			}
			waitLost(t, p)
			tc.up(p)
			_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := raw.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("a connection that lost bytes is still open after the drop ended (read %d bytes, %v)", n, err)
			}
		})
	}
}

// No byte read after a gap reaches the client: bytes the endpoint sends
// during a blackhole are dropped, later ones are not forwarded either,
// even when a pause held the connection meanwhile, and the client reads
// the bytes from before the gap, then the end of the connection.
func TestProxyNothingAfterTheGap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p, err := StartProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	raw, err := net.Dial("unix", strings.TrimPrefix(p.Endpoint(), "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	buf := make([]byte, 64)
	if _, err := sc.Write([]byte("AAAA")); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(raw, buf[:4]); err != nil || string(buf[:n]) != "AAAA" {
		t.Fatalf("before the gap: %q, %v", buf[:n], err)
	}
	p.Pause()
	p.Blackhole()
	if _, err := sc.Write([]byte("BBBB")); err != nil { // dropped
		t.Fatal(err)
	}
	waitLost(t, p) // the relay read BBBB and dropped it; CCCC follows the gap
	_, _ = sc.Write([]byte("CCCC"))
	p.Unblackhole()
	p.Unpause()
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(raw)
	if len(got) > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after the gap the client read %q and then %v; want nothing, then the connection's end", got, err)
	}
}

// waitLost waits, at most 10 s, until a connection of p lost bytes to a
// drop.
func waitLost(t *testing.T, p *Proxy) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		p.mu.Lock()
		lost := false
		for _, rc := range p.conns {
			lost = lost || rc != nil && rc.lost
		}
		p.mu.Unlock()
		if lost {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay dropped nothing")
		}
	}
}
