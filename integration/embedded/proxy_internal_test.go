package embedded

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

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
			tc.up(p)
			_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := raw.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("a connection that lost bytes is still open after the drop ended (read %d bytes, %v)", n, err)
			}
		})
	}
}

// TestMain fails the package's tests if they leave goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
