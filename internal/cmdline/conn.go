package cmdline

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/lock"
)

// Connection defaults, as etcdctl's.
const (
	DefaultEndpoint    = "127.0.0.1:2379"
	defaultDialTimeout = 2 * time.Second
	// keepAliveTime and keepAliveTimeout are the gRPC keep-alive pings of
	// the client: a dead connection is noticed within their sum.
	keepAliveTime    = 10 * time.Second
	keepAliveTimeout = 3 * time.Second
)

// Conn is the connection flags every command that talks to etcd shares,
type Conn struct {
	endpoints   string
	cacert      string
	cert        string
	key         string
	user        string
	dialTimeout time.Duration
	Namespace   string

	fs     *flag.FlagSet
	Getenv func(string) string // os.Getenv; tests replace it
	// aborter ends the requests of the clients config configures, when
	// etcd is given up on (see Abort).
	aborter *aborter
}

// Abort ends every request, in flight or later, of the clients made with
// the configuration of Config.
func (c *Conn) Abort() {
	if c.aborter != nil {
		c.aborter.abort()
	}
}

// ConnHelp is the part of the help of every command that connects.
const ConnHelp = `
Connection flags default from the environment as etcdctl's do: --endpoints
from $ETCDLOCK_ENDPOINTS, then $ETCDCTL_ENDPOINTS; --cacert, --cert, --key,
--user and --dial-timeout from $ETCDCTL_CACERT, $ETCDCTL_CERT, $ETCDCTL_KEY,
$ETCDCTL_USER and $ETCDCTL_DIAL_TIMEOUT; --namespace from
$ETCDLOCK_NAMESPACE. A flag on the command line wins. With --user NAME,
the password comes from $ETCDLOCK_PASSWORD or $ETCDCTL_PASSWORD, or else is
asked for on the terminal, without echo (--user NAME:PASSWORD works too, but
shows the password to every user of ps). With --cert and --key and no
--user, etcd takes the certificate's common name as the user name.

If etcd cannot be reached, the one line on stderr says why: DNS, a refused
connection, a timeout, a TLS handshake (unknown authority, a plain server,
a client certificate refused); if etcd refuses the request, it names the
flag or the permission missing.`

// Register defines the connection flags on fs.
func (c *Conn) Register(fs *flag.FlagSet) {
	c.fs = fs
	fs.StringVar(&c.endpoints, "endpoints", "", "comma-separated `list` of etcd endpoints (default "+DefaultEndpoint+")")
	fs.StringVar(&c.cacert, "cacert", "", "verify etcd's TLS certificate with the CA bundle in `file`")
	fs.StringVar(&c.cert, "cert", "", "TLS client certificate `file`")
	fs.StringVar(&c.key, "key", "", "TLS client key `file`")
	fs.StringVar(&c.user, "user", "", "etcd user `name` (or name:password)")
	DurationVar(fs, &c.dialTimeout, "dial-timeout", defaultDialTimeout, "give up reaching etcd after this `duration`")
	fs.StringVar(&c.Namespace, "namespace", lock.DefaultNamespace, "`prefix` of every key etcdlock reads or writes")
}

// Resolve fills in the flags not given on the command line from the
// environment, and validates them.
func (c *Conn) Resolve() error {
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	given := make(map[string]bool)
	c.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	fromEnv := func(dst *string, flagName string, vars ...string) {
		if given[flagName] {
			return
		}
		for _, v := range vars {
			if s := getenv(v); s != "" {
				*dst = s
				return
			}
		}
	}
	fromEnv(&c.endpoints, "endpoints", "ETCDLOCK_ENDPOINTS", "ETCDCTL_ENDPOINTS")
	fromEnv(&c.cacert, "cacert", "ETCDCTL_CACERT")
	fromEnv(&c.cert, "cert", "ETCDCTL_CERT")
	fromEnv(&c.key, "key", "ETCDCTL_KEY")
	fromEnv(&c.user, "user", "ETCDCTL_USER")
	fromEnv(&c.Namespace, "namespace", "ETCDLOCK_NAMESPACE")
	if !given["dial-timeout"] {
		if s := getenv("ETCDCTL_DIAL_TIMEOUT"); s != "" {
			d, err := ParseDuration(s)
			if err != nil {
				return UsageError("$ETCDCTL_DIAL_TIMEOUT=%q is not a duration", s)
			}
			c.dialTimeout = d
		}
	}
	if c.endpoints == "" {
		c.endpoints = DefaultEndpoint
	}
	switch {
	case len(c.EndpointList()) == 0:
		return UsageError("--endpoints %q names no endpoint", c.endpoints)
	case c.dialTimeout <= 0:
		return UsageError("--dial-timeout must be positive, not %v", c.dialTimeout)
	case (c.cert == "") != (c.key == ""):
		return UsageError("--cert and --key go together")
	}
	if err := lock.ValidateNamespace(c.Namespace); err != nil {
		return UsageError("--namespace: %v", err)
	}
	return nil
}

// EndpointList returns the endpoints, split and trimmed.
func (c *Conn) EndpointList() []string {
	var eps []string
	for _, ep := range strings.Split(c.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	return eps
}

// Config returns the client configuration, asking for the password on the
// terminal if it is needed and nowhere else.
func (c *Conn) Config(ctx context.Context) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:            c.EndpointList(),
		DialTimeout:          c.dialTimeout,
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		Logger:               zap.NewNop(),
		Context:              context.WithoutCancel(ctx),
	}
	if c.aborter == nil {
		c.aborter = newAborter()
	}
	cfg.DialOptions = append(cfg.DialOptions, c.aborter.dialOptions()...)
	if c.cacert != "" || c.cert != "" {
		if c.cacert != "" {
			if err := checkCAFile(c.cacert); err != nil {
				return cfg, err
			}
		}
		info := transport.TLSInfo{CertFile: c.cert, KeyFile: c.key, TrustedCAFile: c.cacert}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return cfg, UsageError("%s", tlsFileError(err))
		}
		cfg.TLS = tlsCfg
	}
	if c.user != "" {
		user, pass, ok := strings.Cut(c.user, ":")
		if !ok {
			pass = c.password()
		}
		if user == "" {
			return cfg, UsageError("--user %q has no user name", c.user)
		}
		if !ok && pass == "" {
			var err error
			if pass, err = promptPassword(ctx, user); err != nil {
				return cfg, err
			}
		}
		cfg.Username, cfg.Password = user, pass
	}
	return cfg, nil
}

// password returns the password from the environment, or "".
func (c *Conn) password() string {
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	for _, v := range []string{"ETCDLOCK_PASSWORD", "ETCDCTL_PASSWORD"} {
		if s := getenv(v); s != "" {
			return s
		}
	}
	return ""
}

// Connect returns a client of etcd that has answered a linearizable read
// of probe (a key prefix), within --dial-timeout. It returns a *failure
// with ExitUsage for bad settings, and ExitUnreachable when etcd did not
// answer in time, saying why (after up to diagnoseTimeout more to find
// out); ctx's cause if ctx ended first; or etcd's refusal, naming the flag
// or permission that would help.
func (c *Conn) Connect(ctx context.Context, probe string) (*clientv3.Client, error) {
	cfg, err := c.Config(ctx)
	if err != nil {
		return nil, err
	}
	return c.ConnectWith(ctx, cfg, probe)
}

// ConnectWith is Connect with the configuration already made (so that a
// caller who needs it too asks for the password once).
func (c *Conn) ConnectWith(ctx context.Context, cfg clientv3.Config, probe string) (*clientv3.Client, error) {
	cli, err := clientv3.New(cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, c.classify(ctx, cfg, probe, err)
	}
	pctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
	defer cancel()
	_, err = cli.Get(pctx, probe, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		_ = cli.Close()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, c.classify(ctx, cfg, probe, err)
	}
	return cli, nil
}

// classify turns a failure to reach etcd into an ExitUnreachable failure
// that says why (DNS, connection, TLS: see diagnose), and reports etcd's
// refusals with the flag that would help. The probe read keys under probe.
func (c *Conn) classify(ctx context.Context, cfg clientv3.Config, probe string, err error) error {
	eps := strings.Join(c.EndpointList(), ",")
	user := strings.SplitN(c.user, ":", 2)[0]
	// clientv3 reports a request that found no connection before its
	// deadline as the context's error, whatever kept it from connecting:
	// dial the endpoints to find out.
	if errors.Is(err, context.DeadlineExceeded) {
		cause := diagnose(ctx, cfg.Endpoints, cfg.TLS, min(c.dialTimeout, diagnoseTimeout))
		if cause == "" {
			cause = "it accepts connections but did not answer"
		}
		return Failf(ExitUnreachable, "cannot reach etcd at %s within %v: %s", eps, c.dialTimeout, cause)
	}
	switch {
	case errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail):
		return Failf(ExitUnreachable, "etcd at %s has no leader: %v", eps, err)
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Errorf("etcd refused the login of user %q: wrong user name or password", user)
	case errors.Is(err, rpctypes.ErrUserEmpty):
		return fmt.Errorf("etcd requires authentication (%w): pass --user NAME (or set $ETCDCTL_USER), or a client certificate whose common name is an etcd user with --cert and --key", err)
	case errors.Is(err, rpctypes.ErrPermissionDenied) && user == "":
		return fmt.Errorf("etcd denied reading %s (%w): no --user given, and the client certificate's common name is no user allowed to; pass --user NAME", probe, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return fmt.Errorf("etcd user %q may not read %s (%w): its role needs readwrite on the keys under --namespace %q", user, probe, err, c.Namespace)
	}
	return fmt.Errorf("etcd: %w", err)
}

// CloseQuietly closes cli, for defers: by then an error closing a client
// changes nothing.
func CloseQuietly(cli *clientv3.Client) { _ = cli.Close() }

// tlsFileError names the TLS file that could not be used.
func tlsFileError(err error) string {
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Sprintf("TLS: cannot read %s: %v", pe.Path, pe.Err)
	}
	return "TLS: " + msg
}

// checkCAFile returns a usage error unless file holds at least one PEM
// certificate (etcd's client would otherwise trust nothing, and every
// handshake would fail with an unknown authority).
func checkCAFile(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return UsageError("%s", tlsFileError(err))
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return UsageError("--cacert %s holds no PEM certificate", file)
	}
	return nil
}

// CloseClient returns a function that closes cli, for closers. The
// context.Canceled that Close reports when the client's own context ends
// first is not an error.
func CloseClient(cli *clientv3.Client) func() error {
	return func() error {
		if err := cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
}
