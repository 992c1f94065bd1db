package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"google.golang.org/grpc"
)

const (
	// Raft timing of all members: fast elections for tests.
	tickMs     = 10
	electionMs = 100

	// maxSocketDirLen keeps unix socket paths well under the sun_path limit
	// (104 bytes on macOS and BSDs, 108 on Linux).
	maxSocketDirLen = 80
)

// seq makes names unique within the process (cluster tokens, peer sockets).
var seq atomic.Uint64

// makeSocketDir creates a short directory for unix sockets. os.TempDir may be
// long (macOS), so it falls back to /tmp.
func makeSocketDir() (string, error) {
	dir, err := os.MkdirTemp("", "etcdlock")
	if err == nil && len(dir) <= maxSocketDirLen {
		return dir, nil
	}
	if err == nil {
		_ = os.RemoveAll(dir)
	}
	dir, err2 := os.MkdirTemp("/tmp", "etcdlock")
	if err2 != nil {
		if err == nil {
			err = err2
		}
		return "", fmt.Errorf("integration: creating unix socket directory: %w", err)
	}
	return dir, nil
}

// unixURL returns the URL of a unix socket at the absolute path p, in the
// form both embed (host+path) and clientv3 ("unix:///abs") understand;
// with secure, TLS over the socket ("unixs:///abs").
func unixURL(p string, secure bool) url.URL {
	if secure {
		return url.URL{Scheme: "unixs", Path: p}
	}
	return url.URL{Scheme: "unix", Path: p}
}

// Member is one etcd member of a [Cluster] (a [Server] wraps one too). A
// member keeps its name, client and peer URLs and data directory across
// [Member.Stop] and [Member.Restart]. Its methods are safe for concurrent
// use; Stop and Restart are serialized.
type Member struct {
	c   *Cluster // nil for the member of a Server
	idx int

	name           string
	cfg            *config
	dataDir        string
	listenPeer     []url.URL
	peerURL        url.URL
	peerSockPath   string // absolute path of the peer socket, "" without one
	initialCluster string
	token          string
	gateway        bool

	// id is set by the first launch and never changes afterwards (etcd
	// derives it from the peer URLs and the cluster token).
	id types.ID

	lifeMu sync.Mutex // serializes launch and stop
	closed bool       // guarded by lifeMu: no launch after the owner's Close

	mu        sync.Mutex
	etcd      *embed.Etcd // nil while stopped
	clientURL url.URL
	// run is the latest run, kept after it stops so that Err reports it;
	// nil before the first launch.
	run *run
	// firstErr is the first failure of any run, reported at the cleanup of
	// NewServer and NewCluster and by Main for the shared server.
	firstErr error
	// grpcs are the running member's gRPC servers, made with
	// grpc.WaitForHandlers so that stopping one waits for its handlers: a
	// hard stop stops them before the storage closes under a handler.
	grpcs []*grpc.Server
}

// run is one run of a member's embedded server, from a launch to the stop
// that ends it. Its watcher goroutine (Member.watch) is the only reader of
// e.Err().
type run struct {
	e *embed.Etcd
	// failed is closed when err is set; err is never written again, so it
	// may be read without Member.mu once failed is closed.
	failed chan struct{}
	// watched is closed when the watcher returns, which it does once
	// e.Close has closed e.Err().
	watched chan struct{}

	// Guarded by Member.mu.
	stopping bool  // set by stop before it closes anything of e
	err      error // first error e reported while not stopping
}

// errServeEnded stands for a nil error on embed.Etcd.Err: a serving
// goroutine of the server returned without an error while it was not being
// stopped.
var errServeEnded = errors.New("a serving goroutine of the server returned without an error")

// watch reads r.e.Err() until e.Close closes it, and records the first
// error the server reports before stop marks r as stopping: errors caused
// by stopping the member on purpose (closed listeners, stopped gRPC
// servers) are not failures.
func (m *Member) watch(r *run) {
	defer close(r.watched)
	for err := range r.e.Err() {
		m.mu.Lock()
		if !r.stopping && r.err == nil {
			if err == nil {
				err = errServeEnded
			}
			r.err = err
			if m.firstErr == nil {
				m.firstErr = err
			}
			close(r.failed)
		}
		m.mu.Unlock()
	}
}

func (m *Member) embedConfig() *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dataDir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(m.cfg.logger)
	cfg.TickMs = tickMs
	cfg.ElectionMs = electionMs
	cfg.UnsafeNoFsync = m.cfg.noFsync
	m.mu.Lock()
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	m.mu.Unlock()
	cfg.ListenPeerUrls = m.listenPeer
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.InitialCluster = m.initialCluster
	cfg.InitialClusterToken = m.token
	cfg.ClusterState = embed.ClusterStateFlagNew // ignored once the data dir is initialized
	cfg.EnableGRPCGateway = m.gateway
	if m.cfg.tlsFiles != nil {
		cfg.ClientTLSInfo = m.cfg.tlsFiles.serverTLSInfo()
	}
	// clientv3 logs in again for every stream it opens (each lease
	// renewal of this module's locks is one), and etcd checks the password
	// with bcrypt each time: the lowest cost keeps tests quick.
	cfg.BcryptCost = 4 // bcrypt.MinCost
	cfg.GRPCAdditionalServerOptions = []grpc.ServerOption{grpc.WaitForHandlers(true)}
	cfg.ServiceRegister = func(gs *grpc.Server) { // etcd makes its servers once ready
		m.mu.Lock()
		m.grpcs = append(m.grpcs, gs)
		m.mu.Unlock()
	}
	return cfg
}

// launch starts the embedded server, and the goroutine that watches its
// errors, without waiting for it to be ready. The caller holds lifeMu.
func (m *Member) launch() (*run, error) {
	if m.closed {
		return nil, errors.New("integration: member " + m.name + " belongs to a closed server or cluster")
	}
	m.mu.Lock()
	running := m.etcd != nil
	m.mu.Unlock()
	if running {
		return nil, errors.New("integration: member " + m.name + " is running")
	}
	e, err := embed.StartEtcd(m.embedConfig())
	if err != nil {
		return nil, fmt.Errorf("integration: starting member %s: %w", m.name, err)
	}
	r := &run{e: e, failed: make(chan struct{}), watched: make(chan struct{})}
	m.mu.Lock()
	m.etcd = e
	m.run = r
	m.grpcs = nil // servers of an earlier launch are stopped
	if m.id == 0 {
		m.id = e.Server.MemberID()
	}
	// With port 0, remember the port actually bound so that clients and
	// restarts use it.
	if m.clientURL.Scheme != "unix" && m.clientURL.Scheme != "unixs" && m.clientURL.Port() == "0" && len(e.Clients) > 0 {
		if _, port, err := net.SplitHostPort(e.Clients[0].Addr().String()); err == nil {
			m.clientURL.Host = net.JoinHostPort(m.clientURL.Hostname(), port)
		}
	}
	m.mu.Unlock()
	go m.watch(r)
	return r, nil
}

// stop closes the embedded server if it runs. With final it also forbids
// later launches. With hard it first stops raft without coordination, so
// that a leader does not try (and, with its peers gone, wait up to the
// request timeout) to hand over leadership.
func (m *Member) stop(final, hard bool) {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if final {
		m.closed = true
	}
	m.mu.Lock()
	e := m.etcd
	m.etcd = nil
	r := m.run
	if e != nil {
		r.stopping = true
	}
	m.mu.Unlock()
	if e == nil {
		return
	}
	if hard {
		// Stop serving clients first: no new connection (the listeners),
		// then no request (the gRPC servers, each waiting for its handlers
		// to return), so that no handler reads the storage that HardStop
		// closes. A server etcd makes after this (it makes them once ready)
		// finds its listener closed.
		for _, l := range e.Clients {
			_ = l.Close()
		}
		m.mu.Lock()
		grpcs := m.grpcs
		m.grpcs = nil
		m.mu.Unlock()
		for _, gs := range grpcs {
			gs.Stop()
		}
		e.Server.HardStop()
	}
	// Close stops the gRPC servers (waiting up to the request timeout for
	// in-flight RPCs), transfers leadership if this member leads and peers
	// are reachable, stops raft and all serving goroutines.
	e.Close()
	<-r.watched // e.Close has closed e.Err()
	if m.peerSockPath != "" {
		_ = os.Remove(m.peerSockPath) // normally already removed by the listener
	}
}

// waitReady waits until the server of r serves clients (its member has
// joined and published itself, which needs a leader), or fails.
func waitReady(ctx context.Context, r *run) error {
	select {
	case <-r.e.Server.ReadyNotify():
		return nil
	case <-r.e.Server.StopNotify():
		return errors.New("server stopped before it became ready")
	case <-r.failed:
		return fmt.Errorf("server failed before it became ready: %w", r.err)
	case <-r.watched:
		return errors.New("server closed before it became ready")
	case <-ctx.Done():
		return fmt.Errorf("waiting for server to become ready: %w", ctx.Err())
	}
}

// Name returns the member name ("m0", "m1", ... in a cluster).
func (m *Member) Name() string { return m.name }

// ID returns the raft member ID. It does not change across restarts.
func (m *Member) ID() types.ID { return m.id }

// DataDir returns the member's data directory.
func (m *Member) DataDir() string { return m.dataDir }

// Endpoint returns the member's client endpoint, usable in
// clientv3.Config.Endpoints. It stays the same across restarts.
func (m *Member) Endpoint() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clientURL.String()
}

// PeerURL returns the URL the member advertises to its peers.
func (m *Member) PeerURL() string { return m.peerURL.String() }

// Running reports whether the member has been started and not stopped.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd != nil
}

// EtcdServer returns the running etcd server, for fault injection and
// inspection (MoveLeader, Lead, ...; for partitions use [Cluster.Isolate],
// not its CutPeer and MendPeer), or nil while the
// member is stopped. The pointer becomes stale when the member stops; fetch
// it again after a restart.
func (m *Member) EtcdServer() *etcdserver.EtcdServer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.etcd == nil {
		return nil
	}
	return m.etcd.Server
}

// Etcd returns the running embedded etcd, or nil while the member is
// stopped.
func (m *Member) Etcd() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd
}

// Err returns the first error that the member's embedded server reported
// on its embed.Etcd.Err channel since the member last started (by its
// constructor or the last [Member.Restart]), or nil if there was none. Such
// an error means that part of the server stopped serving while the member
// ran, for example a client or peer listener whose Serve failed; its
// clients then typically see timeouts. The error names the member and wraps
// the server's own (a serving goroutine that returned without an error
// counts as one too). Stopping the member on purpose ([Member.Stop],
// [Member.HardStop], Close of its [Server] or [Cluster]) closes listeners
// but is not reported. The error stays after the member stops, until it
// restarts; a member whose server failed may still be running, and Err
// does not stop it. An error the server reports just before or while a
// stop begins may go unrecorded: it cannot be told from one the stop
// causes. Err does not block. [NewServer] and [NewCluster] also
// fail their test with tb.Errorf at cleanup if the server of a member
// reported such an error in any of its runs.
func (m *Member) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.run == nil || m.run.err == nil {
		return nil
	}
	return m.failure(m.run.err)
}

// failure wraps err, reported by the member's server, with the member's
// name.
func (m *Member) failure(err error) error {
	return fmt.Errorf("integration: member %s: server failed while running: %w", m.name, err)
}

// FirstFailure returns the first error that the server of any run of the
// member reported (see [Member.Err]), or nil.
func (m *Member) FirstFailure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.firstErr == nil {
		return nil
	}
	return m.failure(m.firstErr)
}

// reportFailure fails tb with tb.Errorf if the server of any run of the
// member reported an error (see [Member.Err]).
func (m *Member) reportFailure(tb TB) {
	tb.Helper()
	if err := m.FirstFailure(); err != nil {
		tb.Errorf("%v", err)
	}
}

// Stop stops the member gracefully and keeps its data directory: it stops
// serving clients (waiting for in-flight requests up to etcd's request
// timeout, about 5 s), hands leadership to another member if it leads and a
// peer is reachable, and stops raft. It blocks until every goroutine of the
// member has exited. Stopping a stopped member does nothing. Stop always
// returns nil; the error is for future use. Requests that clients had sent
// to the member fail, and clientv3 only retries idempotent ones elsewhere.
// A leader whose peers are cut off by [Cluster.Isolate] may wait for the
// request timeout trying to hand over leadership; use [Member.HardStop].
func (m *Member) Stop() error {
	m.stop(false, false)
	return nil
}

// HardStop stops the member like [Member.Stop] but without coordinating with
// its peers or waiting for clients: it closes the client listeners and
// connections at once (requests in flight fail; their handlers finish
// before the storage closes), raft stops at once, a leader does not hand
// over leadership first, and the others notice the loss by their election
// timeout. On-disk state stays consistent, so [Member.Restart] works. It
// blocks until every goroutine of the member has exited. Stopping a stopped
// member does nothing. HardStop always returns nil; the error is for future
// use.
func (m *Member) HardStop() error {
	m.stop(false, true)
	return nil
}

// Restart starts a stopped member again from the same data directory with
// the same client and peer URLs, and waits until it is ready to serve
// (which, in a cluster, needs a leader it can reach). It waits at most until
// ctx is done, or for the start timeout if ctx has no deadline. Restarting
// a running member is an error. Restart re-applies the partitions in
// effect ([Cluster.Isolate], [Faults.PauseMember]) right after the start;
// an isolated member cannot become ready, so Restart then waits for ctx
// unless the partition ends meanwhile. If the member does not become ready it is left running, and
// the error says so; call Stop to stop it.
func (m *Member) Restart(ctx context.Context) error {
	m.lifeMu.Lock()
	r, err := m.launch()
	m.lifeMu.Unlock()
	if err != nil {
		return err
	}
	if m.c != nil {
		m.c.relink(m.idx)
	}
	ctx, cancel := readyTimeout(ctx, m.cfg.startTimeout)
	defer cancel()
	if err := waitReady(ctx, r); err != nil {
		return fmt.Errorf("integration: member %s restarted but is not ready (still running): %w", m.name, err)
	}
	return nil
}

// removePeerSocket removes a leftover peer socket file.
func (m *Member) removePeerSocket() {
	if m.peerSockPath != "" {
		_ = os.Remove(m.peerSockPath)
	}
}

// readyTimeout returns ctx bounded by d when it has no deadline yet.
func readyTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// absPeerSocket returns the absolute path of a peer socket named name in the
// working directory, where etcd's transports create and dial it.
func absPeerSocket(name string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("integration: peer sockets are created in the working directory: %w", err)
	}
	return filepath.Join(wd, name), nil
}

// Client returns a new client of this member only, closed at tb cleanup;
// see [Cluster.Client]. It fails tb with tb.Fatalf on error.
func (m *Member) Client(tb TB) *clientv3.Client {
	tb.Helper()
	return testClient(tb, []string{m.Endpoint()}, m.cfg)
}

// NewClient returns a new client of this member only; the caller closes it.
// See [Server.NewClient] for the configuration.
func (m *Member) NewClient(cfg ...func(*clientv3.Config)) (*clientv3.Client, error) {
	return newClient([]string{m.Endpoint()}, m.cfg, cfg)
}
