package integration

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
// http URL the grpc-gateway (HTTP/JSON at /v3/...) is enabled too; TLS is
// not supported. A [Cluster] of more than one member
// rejects this option.
func WithClientURL(u string) Option {
	return func(c *config) { c.clientURL = u }
}

// WithStartTimeout bounds how long starting (and [Member.Restart] without a
// context deadline) waits for readiness. The default is [DefaultStartTimeout].
func WithStartTimeout(d time.Duration) Option {
	return func(c *config) { c.startTimeout = d }
}
