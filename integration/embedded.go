package integration

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/integration/embedded"
)

// The servers, clusters, proxies and faults are package embedded's, which
// a program may import without linking package testing or goleak (etcdlock
// dev does). This package adds what only tests use: Main, Shared,
// Namespace, RequireEmpty and the helpers that take a testing.TB.
type (
	TB          = embedded.TB
	Server      = embedded.Server
	Cluster     = embedded.Cluster
	Member      = embedded.Member
	Proxy       = embedded.Proxy
	Option      = embedded.Option
	RPCCounter  = embedded.RPCCounter
	TLSFiles    = embedded.TLSFiles
	Faults      = embedded.Faults
	Fault       = embedded.Fault
	FaultRecord = embedded.FaultRecord
	FaultLog    = embedded.FaultLog
	Schedule    = embedded.Schedule
)

// Settings; see package embedded.
const (
	RootUser               = embedded.RootUser
	RootPassword           = embedded.RootPassword
	ClientDialTimeout      = embedded.ClientDialTimeout
	ClientKeepAliveTime    = embedded.ClientKeepAliveTime
	ClientKeepAliveTimeout = embedded.ClientKeepAliveTimeout
	ClientCertName         = embedded.ClientCertName
	DefaultStartTimeout    = embedded.DefaultStartTimeout
	DefaultStuckAfter      = embedded.DefaultStuckAfter
	FaultUndoTimeout       = embedded.FaultUndoTimeout
	LeaseKeepAliveMethod   = embedded.LeaseKeepAliveMethod
	ProxyCloseTimeout      = embedded.ProxyCloseTimeout
)

// NewServer is embedded.NewServer: a single-member server stopped at tb's
// cleanup; a failure to start fails tb.
func NewServer(tb testing.TB, opts ...Option) *Server { return embedded.NewServer(tb, opts...) }

// StartServer is embedded.StartServer: a single-member server the caller
// closes.
func StartServer(opts ...Option) (*Server, error) { return embedded.StartServer(opts...) }

// NewCluster is embedded.NewCluster: n members stopped at tb's cleanup.
func NewCluster(tb testing.TB, n int, opts ...Option) *Cluster {
	return embedded.NewCluster(tb, n, opts...)
}

// StartCluster is embedded.StartCluster: n members the caller closes.
func StartCluster(n int, opts ...Option) (*Cluster, error) { return embedded.StartCluster(n, opts...) }

// NewProxy is embedded.NewProxy: a proxy to endpoint closed at tb's cleanup.
func NewProxy(tb testing.TB, endpoint string) *Proxy { return embedded.NewProxy(tb, endpoint) }

// StartProxy is embedded.StartProxy: a proxy to endpoint the caller closes.
func StartProxy(endpoint string) (*Proxy, error) { return embedded.StartProxy(endpoint) }

// NewFaults is embedded.NewFaults.
func NewFaults(c *Cluster, lg *zap.Logger) (*Faults, error) { return embedded.NewFaults(c, lg) }

// ClientFault is embedded.ClientFault.
func ClientFault(name string, clients [][]*Proxy, minD, maxD time.Duration,
	fn func(ctx context.Context, d time.Duration, ps ...*Proxy) error) Fault {
	return embedded.ClientFault(name, clients, minD, maxD, fn)
}

// PauseClient is embedded.PauseClient.
func PauseClient(ctx context.Context, d time.Duration, ps ...*Proxy) error {
	return embedded.PauseClient(ctx, d, ps...)
}

// BlackholeClient is embedded.BlackholeClient.
func BlackholeClient(ctx context.Context, d time.Duration, ps ...*Proxy) error {
	return embedded.BlackholeClient(ctx, d, ps...)
}

// DelayClientResponses is embedded.DelayClientResponses.
func DelayClientResponses(ctx context.Context, d, latency time.Duration, ps ...*Proxy) error {
	return embedded.DelayClientResponses(ctx, d, latency, ps...)
}

// DropClientRequests is embedded.DropClientRequests.
func DropClientRequests(ctx context.Context, d time.Duration, ps ...*Proxy) error {
	return embedded.DropClientRequests(ctx, d, ps...)
}

// AddPrefixUser is embedded.AddPrefixUser.
func AddPrefixUser(ctx context.Context, root *clientv3.Client, name, password, prefix string) error {
	return embedded.AddPrefixUser(ctx, root, name, password, prefix)
}

// WithoutFsync is embedded.WithoutFsync: no fsync of the WAL and database.
func WithoutFsync() Option { return embedded.WithoutFsync() }

// WithLogger is embedded.WithLogger: the members log to lg.
func WithLogger(lg *zap.Logger) Option { return embedded.WithLogger(lg) }

// WithDataDir is embedded.WithDataDir: the members keep their data in dir.
func WithDataDir(dir string) Option { return embedded.WithDataDir(dir) }

// WithClientURL is embedded.WithClientURL: a single server listens on u.
func WithClientURL(u string) Option { return embedded.WithClientURL(u) }

// WithStartTimeout is embedded.WithStartTimeout: how long a start may take.
func WithStartTimeout(d time.Duration) Option { return embedded.WithStartTimeout(d) }

// WithTLS is embedded.WithTLS: clients are served over TLS only.
func WithTLS() Option { return embedded.WithTLS() }

// WithAuth is embedded.WithAuth: etcd's authentication, with a root user.
func WithAuth() Option { return embedded.WithAuth() }
