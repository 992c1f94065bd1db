package embedded

import (
	"time"

	"go.uber.org/zap"
)

// DefaultStartTimeout bounds how long constructors wait for members to become
// ready (and, for clusters, to elect a leader) unless [WithStartTimeout] is
// given.
const DefaultStartTimeout = 20 * time.Second

// Option configures a [Server] or [Cluster].
type Option func(*config)

type config struct {
	noFsync      bool
	logger       *zap.Logger
	dataDir      string
	clientURL    string
	startTimeout time.Duration
	tls          bool
	auth         bool

	// tlsFiles are the certificates WithTLS made, set by the constructor
	// before the first member starts and never changed afterwards.
	tlsFiles *TLSFiles
}

func newConfig(opts []Option) *config {
	cfg := &config{startTimeout: DefaultStartTimeout}
	for _, o := range opts {
		if o != nil {
			o(cfg)
		}
	}
	if cfg.logger == nil {
		cfg.logger = zap.NewNop()
	}
	if cfg.startTimeout <= 0 {
		cfg.startTimeout = DefaultStartTimeout
	}
	return cfg
}

// WithoutFsync disables fsync in the members (etcd's UnsafeNoFsync). Data
// is then not durable across machine crashes, but member restarts within the
// process still keep it. The default is fsync on.
func WithoutFsync() Option {
	return func(c *config) { c.noFsync = true }
}

// WithLogger sets the logger of the etcd members. The default is
// zap.NewNop(): the etcd server logs a lot at info level.
func WithLogger(lg *zap.Logger) Option {
	return func(c *config) { c.logger = lg }
}

// WithDataDir sets the data directory. A [Server] uses dir itself; member i
// of a [Cluster] uses dir/m<i>. Directories given here are never removed.
// An existing data directory is reused (the member restarts from it). The
// default is a fresh directory: tb.TempDir() under [NewServer] and
// [NewCluster], and a directory made by os.MkdirTemp and removed at Close
// under [StartServer] and [StartCluster].
func WithDataDir(dir string) Option {
	return func(c *config) { c.dataDir = dir }
}

// WithClientURL makes a single server listen for clients on u (for example
// "http://127.0.0.1:2379" for a development server) instead of on a unix
// socket in a temporary directory. Port 0 picks a free port; [Server.Endpoints]
// then reports the port actually bound (and restarts reuse it). With an
// http URL the grpc-gateway (HTTP/JSON at /v3/...) is enabled too. With
// [WithTLS] the URL must be https (the gateway is then off), and without it
// http. A [Cluster] of more than one member rejects this option.
func WithClientURL(u string) Option {
	return func(c *config) { c.clientURL = u }
}

// WithStartTimeout bounds how long starting (and [Member.Restart] without a
// context deadline) waits for readiness. The default is [DefaultStartTimeout].
func WithStartTimeout(d time.Duration) Option {
	return func(c *config) { c.startTimeout = d }
}

// WithTLS makes the members serve clients over TLS only and require a
// client certificate signed by their CA. A CA, a server certificate and a
// client certificate (ECDSA P-256, valid for a day) are made when the
// server or cluster starts, in a directory removed at Close; [Server.TLS]
// and [Cluster.TLS] name the files. The client URLs are then
// "unixs:///tmp/etcdlockNNN/etcd.sock" (m0.sock, m1.sock ... in a
// cluster): clientv3 checks the certificate of a unixs endpoint against the
// socket's file name, which the server certificate names, as it does
// "localhost", 127.0.0.1 and ::1 and the host of [WithClientURL]. Peers
// still talk in the clear, over unix sockets. Clients made by this package
// present the client certificate; those of a [Proxy] do not, and a proxy
// does not accept a unixs endpoint. The default is no TLS.
func WithTLS() Option {
	return func(c *config) { c.tls = true }
}

// WithAuth turns etcd's authentication on once the members are ready: it
// creates the user [RootUser] with password [RootPassword] and etcd's root
// role. Clients made by this package log in as that user; make others with
// [AddPrefixUser]. A data directory where authentication is already on is
// reused as it is. The default is no authentication.
func WithAuth() Option {
	return func(c *config) { c.auth = true }
}
