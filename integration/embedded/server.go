package embedded

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver"
)

// Server is one embedded etcd member running in this process. Its methods
// are safe for concurrent use.
type Server struct {
	m *Member

	mu       sync.Mutex
	owned    []string // directories to remove at Close
	closed   bool
	closeErr error
}

// NewServer starts a single-member etcd server for a test and waits until it
// serves clients. It calls tb.Helper. The data directory is tb.TempDir()
// unless [WithDataDir] is given; it is created before the cleanup that closes
// the server is registered, so that the server stops before the directory is
// removed. The cleanup is registered before anything that can fail or leak,
// and on any error NewServer fails the test with tb.Fatalf. It blocks for up
// to the start timeout (see [WithStartTimeout]). If the server reported an
// error while it ran (see [Member.Err]; in any run, restarts included), the
// cleanup fails the test with tb.Errorf after closing the server.
func NewServer(tb TB, opts ...Option) *Server {
	tb.Helper()
	cfg := newConfig(opts)
	if cfg.dataDir == "" {
		cfg.dataDir = tb.TempDir()
	}
	s := &Server{}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("integration: closing etcd server: %v", err)
		}
		if m := s.Member(); m != nil {
			m.reportFailure(tb)
		}
	})
	if err := s.start(cfg); err != nil {
		tb.Fatalf("integration: %v", err)
	}
	return s
}

// StartServer starts a single-member etcd server outside a test, with the
// same behaviour as [NewServer], and returns once it serves clients. Without
// [WithDataDir] the data directory is a new temporary directory removed by
// Close. The caller must call [Server.Close]. On error everything started so
// far has been stopped and removed.
func StartServer(opts ...Option) (*Server, error) {
	cfg := newConfig(opts)
	s := &Server{}
	if cfg.dataDir == "" {
		dir, err := os.MkdirTemp("", "etcdlock-data")
		if err != nil {
			return nil, fmt.Errorf("integration: creating data directory: %w", err)
		}
		s.owned = append(s.owned, dir)
		cfg.dataDir = dir
	}
	if err := s.start(cfg); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(cfg *config) error {
	n := seq.Add(1)
	m := &Member{
		idx:     0,
		name:    "default",
		cfg:     cfg,
		dataDir: cfg.dataDir,
		token:   fmt.Sprintf("etcdlock-%d-%d", os.Getpid(), n),
		// A single member never talks to peers, so it listens for none;
		// the advertised peer URL only names the member (and derives its ID).
		peerURL: url.URL{Scheme: "unix", Host: "etcdlock-no-peer-listener:0"},
	}
	m.initialCluster = m.name + "=" + m.peerURL.String()
	if err := s.setupTLS(cfg); err != nil {
		return err
	}
	if cfg.clientURL != "" {
		u, err := parseClientURL(cfg)
		if err != nil {
			return err
		}
		m.clientURL = *u
		m.gateway = u.Scheme == "http"
	} else {
		dir, err := makeSocketDir()
		if err != nil {
			return err
		}
		if err := s.own(dir); err != nil {
			return err
		}
		m.clientURL = unixURL(filepath.Join(dir, "etcd.sock"), cfg.tls)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errServerClosed
	}
	s.m = m
	s.mu.Unlock()

	m.lifeMu.Lock()
	r, err := m.launch()
	m.lifeMu.Unlock()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.startTimeout)
	defer cancel()
	if err := waitReady(ctx, r); err != nil {
		return fmt.Errorf("integration: etcd server: %w", err)
	}
	if cfg.auth {
		return enableAuth(ctx, []string{m.Endpoint()}, cfg)
	}
	return nil
}

// setupTLS makes the certificates of [WithTLS], if asked for, in a
// directory the server removes at Close.
func (s *Server) setupTLS(cfg *config) error {
	if !cfg.tls {
		return nil
	}
	f, err := makeTLS(tlsHosts(1, cfg.clientURL))
	if err != nil {
		return err
	}
	if err := s.own(f.dir); err != nil {
		return err
	}
	cfg.tlsFiles = f
	return nil
}

// parseClientURL parses the URL of [WithClientURL] and checks that its
// scheme fits [WithTLS].
func parseClientURL(cfg *config) (*url.URL, error) {
	u, err := url.Parse(cfg.clientURL)
	if err != nil {
		return nil, fmt.Errorf("integration: parsing client URL %q: %w", cfg.clientURL, err)
	}
	switch {
	case cfg.tls && u.Scheme != "https" && u.Scheme != "unixs":
		return nil, fmt.Errorf("integration: client URL %q: WithTLS needs https", cfg.clientURL)
	case !cfg.tls && (u.Scheme == "https" || u.Scheme == "unixs"):
		return nil, fmt.Errorf("integration: client URL %q: %s needs WithTLS", cfg.clientURL, u.Scheme)
	}
	return u, nil
}

// config returns the configuration the server was started with, or nil.
func (s *Server) config() *config {
	if m := s.Member(); m != nil {
		return m.cfg
	}
	return nil
}

// TLS returns the certificate files of a server started [WithTLS], or nil.
func (s *Server) TLS() *TLSFiles {
	if cfg := s.config(); cfg != nil {
		return cfg.tlsFiles
	}
	return nil
}

var errServerClosed = errors.New("integration: server closed while starting")

// own records dir for removal at Close, or removes it now if Close has run.
func (s *Server) own(dir string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = os.RemoveAll(dir)
		return errServerClosed
	}
	s.owned = append(s.owned, dir)
	return nil
}

// Member returns the server's only member, for [Member.EtcdServer] and the
// like. Stopping or restarting it is allowed.
func (s *Server) Member() *Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

// EtcdServer returns the running etcd server, or nil while its member is
// stopped and once the server is closed.
func (s *Server) EtcdServer() *etcdserver.EtcdServer {
	if m := s.Member(); m != nil {
		return m.EtcdServer()
	}
	return nil
}

// Err returns [Member.Err] of the server's member: the first error its
// embedded server reported while running since it last started, or nil. It
// does not block.
func (s *Server) Err() error {
	if m := s.Member(); m != nil {
		return m.Err()
	}
	return nil
}

// Endpoints returns the client endpoints of the server, usable as
// clientv3.Config.Endpoints: by default one "unix:///tmp/etcdlock.../etcd.sock"
// endpoint.
func (s *Server) Endpoints() []string {
	m := s.Member()
	if m == nil {
		return nil
	}
	return []string{m.Endpoint()}
}

// Endpoint returns the only client endpoint of the server.
func (s *Server) Endpoint() string {
	m := s.Member()
	if m == nil {
		return ""
	}
	return m.Endpoint()
}

// Client returns a new client of the server that is closed at tb cleanup
// (before the server, if the server was made by [NewServer] earlier in the
// same test). It fails tb with tb.Fatalf if the client cannot be created.
// The client uses the settings of [Server.NewClient]. It does not block on
// the network.
func (s *Server) Client(tb TB) *clientv3.Client {
	tb.Helper()
	return testClient(tb, s.Endpoints(), s.config())
}

// NewClient returns a new client of the server; the caller closes it. The
// configuration has the server's endpoints, DialTimeout [ClientDialTimeout],
// keep-alive pings every [ClientKeepAliveTime] answered within
// [ClientKeepAliveTimeout], and a zap.NewNop logger; each cfg function may
// change it before the client is created. It does not block on the network.
func (s *Server) NewClient(cfg ...func(*clientv3.Config)) (*clientv3.Client, error) {
	return newClient(s.Endpoints(), s.config(), cfg)
}

// Close stops the server and waits for all its goroutines, then removes the
// directories it created (socket directory and, under StartServer, the data
// directory; tb.TempDir directories are left to the testing package). Close
// with clients still connected waits up to etcd's request timeout (about
// 5 s) for their in-flight requests. Close is idempotent and returns the
// first call's error on later calls.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		err := s.closeErr
		s.mu.Unlock()
		return err
	}
	s.closed = true
	m := s.m
	s.mu.Unlock()

	if m != nil {
		m.stop(true, false)
	}
	var errs []string
	for _, dir := range s.owned {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err.Error())
		}
	}
	var err error
	if len(errs) > 0 {
		err = errors.New("integration: removing directories: " + strings.Join(errs, "; "))
	}
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	return err
}
