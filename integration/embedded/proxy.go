package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/proxy"
	"go.uber.org/zap"
)

// ProxyCloseTimeout bounds how long [Proxy.Close] waits for the goroutines
// of the connections it closed to end.
const ProxyCloseTimeout = 10 * time.Second

// Proxy forwards connections from its own unix socket to one endpoint and
// can hold or drop the traffic, to simulate a paused or partitioned client
// connection. It wraps go.etcd.io/etcd/pkg/v3/proxy, which forwards to a
// relay of this package that dials the endpoint: a connection made while
// the endpoint is down is closed at once, and Close cuts every connection.
// Its methods are safe for concurrent use.
type Proxy struct {
	srv      proxy.Server
	dir      string
	endpoint string
	drained  chan struct{}

	target  url.URL // network (Scheme) and address (Host) of the endpoint
	relayLn net.Listener
	ctx     context.Context // ends at Close: cancels dials to the endpoint
	cancel  context.CancelFunc
	relayWg sync.WaitGroup // the relay's goroutines

	// The faults below nest: each counts the calls not yet undone, and
	// only the first call and the last undo reach the etcd proxy. Drops
	// are the relay's own (see relayCopy).
	mu         sync.Mutex
	conns      map[net.Conn]*relayConn // the relay's open connections
	closed     bool
	paused     int             // Pause calls not matched by Unpause yet
	blackholed int             // Blackhole calls not matched by Unblackhole yet
	dropped    int             // BlackholeRequests calls not matched yet
	delays     []time.Duration // latencies of DelayResponses calls not undone yet
	delay      time.Duration   // the response latency set on the etcd proxy

	closeOnce sync.Once
	closeErr  error
}

// NewProxy starts a proxy to endpoint (see [StartProxy]) that is closed at tb
// cleanup; create it before the clients that use it so that they are
// closed first (Close would otherwise cut their connections, which they
// may report as errors). It fails tb with tb.Fatalf on error.
func NewProxy(tb TB, endpoint string) *Proxy {
	tb.Helper()
	p, err := StartProxy(endpoint)
	if err != nil {
		tb.Fatalf("integration: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("integration: closing proxy: %v", err)
		}
	})
	return p
}

// StartProxy starts a proxy to endpoint, which is a clientv3 endpoint of the
// form "unix:///abs/path", "unix://rel/path", "http://host:port" or
// "host:port" (TLS endpoints are not supported). The proxy listens on a
// unix socket in a new temporary directory; dial [Proxy.Endpoint]. It
// does not dial endpoint itself: each connection to the proxy does, and one
// made while endpoint is down is closed at once. It returns once the proxy
// accepts connections. The caller must call [Proxy.Close].
func StartProxy(endpoint string) (*Proxy, error) {
	to, err := proxyTarget(endpoint)
	if err != nil {
		return nil, err
	}
	dir, err := makeSocketDir()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "proxy.sock")
	relaySock := filepath.Join(dir, "relay.sock")
	relayLn, err := net.Listen("unix", relaySock)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("integration: starting proxy to %s: %w", endpoint, err)
	}
	// proxy listens on From.Host when it has no port, so an absolute path
	// goes there (this URL is never printed or parsed). It dials the relay,
	// which always answers, instead of the endpoint: the proxy would leave
	// a connection it accepted open and unanswered if its dial failed.
	srv := proxy.NewServer(proxy.ServerConfig{
		Logger: zap.NewNop(),
		From:   url.URL{Scheme: "unix", Host: sock},
		To:     url.URL{Scheme: "unix", Host: relaySock},
	})
	select {
	case <-srv.Ready():
	case <-srv.Done():
		// NewServer reports a listen error on Error() and closes.
		err := errors.New("proxy closed")
		select {
		case err = <-srv.Error():
		default:
		}
		_ = relayLn.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("integration: starting proxy to %s: %w", endpoint, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		srv:      srv,
		dir:      dir,
		endpoint: "unix://" + sock,
		drained:  make(chan struct{}),
		target:   to,
		relayLn:  relayLn,
		ctx:      ctx,
		cancel:   cancel,
		conns:    make(map[net.Conn]*relayConn),
	}
	go p.drainErrors()
	p.relayWg.Go(p.relay)
	return p, nil
}

// relay accepts the proxy's connections until Close, and forwards each to
// the endpoint.
func (p *Proxy) relay() {
	for {
		c, err := p.relayLn.Accept()
		if err != nil {
			return // closed by Close
		}
		if !p.track(c, nil) {
			return
		}
		p.relayWg.Go(func() { p.forward(c) })
	}
}

// relayConn is one connection through the relay: c from the etcd proxy, t
// to the endpoint. Guarded by Proxy.mu.
type relayConn struct {
	c, t net.Conn
	// lost is set once a drop discarded bytes of it: it never forwards
	// again, and is closed when the drops end.
	lost bool
}

// forward dials the endpoint for the proxy's connection c and copies
// between the two until either side ends or Close. If the dial fails it
// closes c, and the proxy then closes its client's connection.
func (p *Proxy) forward(c net.Conn) {
	defer p.untrack(c)
	var d net.Dialer
	t, err := d.DialContext(p.ctx, p.target.Scheme, p.target.Host)
	if err != nil {
		return
	}
	rc := &relayConn{c: c, t: t}
	if !p.track(c, rc) || !p.track(t, rc) {
		_ = t.Close()
		return
	}
	defer p.untrack(t)
	var wg sync.WaitGroup
	wg.Go(func() {
		p.relayCopy(t, c, rc, false)
		_ = t.Close()
		_ = c.Close()
	})
	p.relayCopy(c, t, rc, true)
	_ = c.Close()
	_ = t.Close()
	wg.Wait()
}

// relayCopy copies from src to dst (the responses if rx, else the
// requests) until either fails. While a drop of its direction is in effect
// it discards what it reads and marks rc lost, and a lost connection never
// forwards again: dropping here, where the bytes are read, means that no
// byte read after the gap reaches the other side, which would take the
// rest of the stream for frames (a TCP connection never resumes with a
// gap: it delivers every byte or breaks).
func (p *Proxy) relayCopy(dst, src net.Conn, rc *relayConn, rx bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.drop(rc, rx) {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// drop reports whether bytes of rc's direction rx are to be discarded, and
// marks rc lost if so.
func (p *Proxy) drop(rc *relayConn, rx bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blackholed > 0 || !rx && p.dropped > 0 {
		rc.lost = true
	}
	return rc.lost
}

// track records the open connection c of rc, or closes it and reports
// false once Close has run.
func (p *Proxy) track(c net.Conn, rc *relayConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = rc
	return true
}

// untrack closes c and forgets it.
func (p *Proxy) untrack(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// drainErrors empties the proxy's error channel: it is small and the
// proxy's goroutines block on it (even the accept loop) once it is full.
func (p *Proxy) drainErrors() {
	defer close(p.drained)
	for {
		select {
		case <-p.srv.Error():
		case <-p.srv.Done():
			return
		}
	}
}

func proxyTarget(ep string) (url.URL, error) {
	switch {
	case strings.HasPrefix(ep, "unix://"):
		return url.URL{Scheme: "unix", Host: strings.TrimPrefix(ep, "unix://")}, nil
	case strings.HasPrefix(ep, "unix:"):
		return url.URL{Scheme: "unix", Host: strings.TrimPrefix(ep, "unix:")}, nil
	case strings.HasPrefix(ep, "http://"):
		u, err := url.Parse(ep)
		if err != nil {
			return url.URL{}, fmt.Errorf("integration: proxy target %q: %w", ep, err)
		}
		return url.URL{Scheme: "tcp", Host: u.Host}, nil
	case strings.Contains(ep, "://"):
		return url.URL{}, fmt.Errorf("integration: proxy target %q: unsupported scheme", ep)
	default:
		return url.URL{Scheme: "tcp", Host: ep}, nil
	}
}

// Endpoint returns the endpoint clients dial to go through the proxy, a
// "unix:///tmp/etcdlock.../proxy.sock" URL.
func (p *Proxy) Endpoint() string { return p.endpoint }

// Server returns the underlying go.etcd.io/etcd/pkg/v3/proxy server, for
// other faults (request latency, accept pauses, ...). Its To is the
// relay's socket, not the endpoint. Its own faults do not nest, and they
// share state with the Proxy's: do not call its PauseTx and PauseRx while
// [Proxy.Pause] is in effect, nor its DelayRx and UndelayRx while
// [Proxy.DelayResponses] is: each replaces the fault that the other's undo
// ends. Its BlackholeTx, BlackholeRx, ModifyTx and ModifyRx drop bytes
// mid-stream and leave the connection open, which no TCP connection does:
// a client may then parse garbage as a response. [Proxy.Blackhole] and
// [Proxy.BlackholeRequests] drop in the relay instead and never do that.
func (p *Proxy) Server() proxy.Server { return p.srv }

// Pause holds the traffic in both directions: bytes already read from one
// side are not forwarded until [Proxy.Unpause]. Connections stay open and
// new ones are accepted, but nothing gets through, so requests time out.
// Pauses nest: the traffic flows again once every Pause has been matched
// by an Unpause, so that overlapping [PauseClient] calls on one proxy hold
// it until the last one ends. It does not block.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused++
	if p.paused == 1 {
		p.srv.PauseTx()
		p.srv.PauseRx()
	}
}

// Unpause ends one [Proxy.Pause]; once none is left, it forwards the held
// traffic and lets new traffic through again. An Unpause without a Pause
// to end does nothing. It does not block.
func (p *Proxy) Unpause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused == 0 {
		return
	}
	p.paused--
	if p.paused == 0 {
		p.srv.UnpauseTx()
		p.srv.UnpauseRx()
	}
}

// Blackhole drops the traffic in both directions until [Proxy.Unblackhole]:
// bytes are read and discarded, connections stay open meanwhile. A
// connection that lost bytes never forwards another (what follows a gap
// would be misread), and is closed when the blackhole ends; its client
// reconnects. Blackholes nest
// like pauses: the traffic is dropped until every Blackhole has been
// matched by an Unblackhole, so that overlapping [BlackholeClient] calls
// on one proxy drop it until the last one ends. It does not block.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackholed++
	p.applyDrops()
}

// Unblackhole ends one [Proxy.Blackhole]; once none is left, it forwards
// traffic again (requests stay dropped while [Proxy.BlackholeRequests] is
// in effect). An Unblackhole without a Blackhole to end does nothing. It
// does not block.
func (p *Proxy) Unblackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blackholed == 0 {
		return
	}
	p.blackholed--
	p.applyDrops()
}

// BlackholeRequests drops the traffic from the client to the endpoint until
// [Proxy.UnblackholeRequests], while the endpoint's answers still come
// through: a one-way partition. Like [Proxy.Blackhole], its end closes the
// connections it carried. It nests with itself and with Blackhole: the
// requests are dropped while any BlackholeRequests or Blackhole has not
// been undone yet. It does not block.
func (p *Proxy) BlackholeRequests() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropped++
	p.applyDrops()
}

// UnblackholeRequests ends one [Proxy.BlackholeRequests]. One without a
// BlackholeRequests to end does nothing. It does not block.
func (p *Proxy) UnblackholeRequests() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dropped == 0 {
		return
	}
	p.dropped--
	p.applyDrops()
}

// applyDrops closes, once no drop is in effect any more, the connections
// that lost bytes to one: their clients reconnect. p.mu is held.
func (p *Proxy) applyDrops() {
	if p.blackholed+p.dropped > 0 {
		return
	}
	for c, rc := range p.conns {
		if rc != nil && rc.lost {
			_ = c.Close()
		}
	}
}

// DelayResponses delays the traffic from the endpoint to the client by
// latency until [Proxy.UndelayResponses] with the same latency: the proxy
// waits latency before forwarding each chunk it reads, so back-to-back
// responses queue up behind each other. Delays nest: while several are in
// effect the longest latency applies, and the end of one leaves the others
// in effect. A latency of zero or less does nothing. It does not block.
func (p *Proxy) DelayResponses(latency time.Duration) {
	if latency <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delays = append(p.delays, latency)
	p.applyDelay()
}

// UndelayResponses ends one [Proxy.DelayResponses] of the same latency; once
// none is left, responses are forwarded at once again. One without a
// DelayResponses of that latency to end does nothing. It does not block.
func (p *Proxy) UndelayResponses(latency time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, d := range p.delays {
		if d == latency {
			p.delays = append(p.delays[:i], p.delays[i+1:]...)
			p.applyDelay()
			return
		}
	}
}

// applyDelay sets the etcd proxy's response latency to the longest one in
// effect. p.mu is held.
func (p *Proxy) applyDelay() {
	var d time.Duration
	for _, l := range p.delays {
		d = max(d, l)
	}
	if d == p.delay {
		return
	}
	if d == 0 {
		p.srv.UndelayRx()
	} else {
		p.srv.DelayRx(d, 0)
	}
	p.delay = d
}

// Close stops accepting connections, closes the connections through the
// proxy (their clients see them break, and reconnect elsewhere or fail)
// and waits for the proxy's goroutines, at most [ProxyCloseTimeout]; then
// it removes the socket directory. It returns an error if the goroutines
// did not end in time or the directory could not be removed. It is
// idempotent and returns the first call's error on later calls.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := p.conns
		p.conns = nil
		p.mu.Unlock()
		p.cancel()
		_ = p.relayLn.Close()
		for c := range conns {
			_ = c.Close()
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Closing the relay's connections ends the proxy's: those
			// reading from the relay see it close, and close their
			// client's connection.
			_ = p.srv.Close() // the only error is the listener's, already closed by a reset
			<-p.drained
			p.relayWg.Wait()
		}()
		select {
		case <-done:
		case <-time.After(ProxyCloseTimeout):
			p.closeErr = fmt.Errorf("integration: proxy connections still open after %v", ProxyCloseTimeout)
		}
		if err := os.RemoveAll(p.dir); err != nil && p.closeErr == nil {
			p.closeErr = err
		}
	})
	return p.closeErr
}

// Client returns a new client that reaches the endpoint through the proxy,
// with the settings of [Server.NewClient], closed at tb cleanup (before the
// proxy, which [NewProxy] registered earlier). Errors from closing it are
// not reported: after a pause or blackhole its connection may well be
// broken. It fails tb if the client cannot be created.
func (p *Proxy) Client(tb TB) *clientv3.Client {
	tb.Helper()
	cli, err := newClient([]string{p.Endpoint()}, nil, nil)
	if err != nil {
		tb.Fatalf("integration: creating client through proxy %s: %v", p.Endpoint(), err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}
