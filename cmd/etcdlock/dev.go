package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/etcdlock/etcdlock/integration/embedded"
	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// devCmd is "etcdlock dev".
var devCmd = &command{
	name:    "dev",
	summary: "run a throwaway single-member etcd server to try etcdlock on",
	usage:   "etcdlock dev [flags]",
	help: `
Dev runs an embedded single-member etcd server listening for clients on
--listen (plain HTTP, no TLS, no authentication unless asked for), so
that every other command can be tried across terminals with no etcd
installed. It prints the client endpoint alone on stdout, and notes on
stderr, then serves until interrupted (SIGINT, SIGTERM), when it stops the
server cleanly and exits 0.

The data lives in a new temporary directory, removed at exit, written
without fsync; with --data-dir it lives in that directory (created if
needed, reused if it holds data), with fsync, and stays.

The default endpoint of the other commands is this server's default
--listen, 127.0.0.1:2379. With another --listen, point them at it with
--endpoints or $ETCDLOCK_ENDPOINTS.

With --tls the server speaks HTTPS only and requires a client certificate:
it makes a CA, its own certificate and a client certificate in a temporary
directory (removed at exit). With --auth it turns etcd's authentication on,
with the user root. Dev then prints, on stderr, the variables to export in
other terminals (the certificate files; the user and its password).

Not for production: one member, throwaway certificates, a known password.
The exit status is 0, 2 for bad usage, 1 if the server cannot start (e.g.
the port is in use).`,
	setup: setupDev,
}

// setupDev defines dev's flags.
func setupDev(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) int {
	listen := fs.String("listen", cmdline.DefaultEndpoint, "serve clients on this `host:port` (port 0 picks a free one)")
	dataDir := fs.String("data-dir", "", "keep etcd's data in `dir` (default: a temporary directory, removed at exit)")
	withTLS := fs.Bool("tls", false, "serve HTTPS only, with certificates made at start, and require client certificates")
	withAuth := fs.Bool("auth", false, "turn etcd's authentication on, with the user root")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		host, port, err := net.SplitHostPort(*listen)
		if err != nil || host == "" {
			return badUsage(stderr, "dev", "--listen must be host:port, not %q", *listen)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
			return badUsage(stderr, "dev", "--listen %q: bad port", *listen)
		}
		scheme := "http://"
		var opts []embedded.Option
		if *withTLS {
			scheme = "https://"
			opts = append(opts, embedded.WithTLS())
		}
		if *withAuth {
			opts = append(opts, embedded.WithAuth())
		}
		opts = append(opts, embedded.WithClientURL(scheme+net.JoinHostPort(host, port)))
		if *dataDir != "" {
			opts = append(opts, embedded.WithDataDir(*dataDir))
		} else {
			opts = append(opts, embedded.WithoutFsync())
		}
		srv, err := embedded.StartServer(opts...)
		if err != nil {
			fmt.Fprintf(stderr, "etcdlock dev: %s\n", cmdline.OneLine(err.Error()))
			return exitFailure
		}
		ep := srv.Endpoint()
		where := srv.Member().DataDir()
		if *dataDir == "" {
			where += " (removed at exit)"
		}
		fmt.Fprintln(stdout, ep)
		fmt.Fprintf(stderr, "etcdlock dev: etcd serves clients on %s; data in %s\n", ep, where)
		var exports []string
		if *listen != cmdline.DefaultEndpoint || *withTLS {
			exports = append(exports, "ETCDLOCK_ENDPOINTS="+ep)
		}
		if f := srv.TLS(); f != nil {
			exports = append(exports, "ETCDCTL_CACERT="+f.CAFile, "ETCDCTL_CERT="+f.CertFile, "ETCDCTL_KEY="+f.KeyFile)
		}
		if *withAuth {
			exports = append(exports, "ETCDCTL_USER="+embedded.RootUser, "ETCDLOCK_PASSWORD="+embedded.RootPassword)
		}
		if len(exports) > 0 {
			fmt.Fprintf(stderr, "etcdlock dev: in other terminals: export %s\n", strings.Join(exports, " "))
		}
		fmt.Fprintln(stderr, "etcdlock dev: stop with Ctrl-C")
		<-ctx.Done()
		if err := srv.Close(); err != nil {
			fmt.Fprintf(stderr, "etcdlock dev: stopping etcd: %s\n", cmdline.OneLine(err.Error()))
			return exitFailure
		}
		fmt.Fprintln(stderr, "etcdlock dev: stopped")
		return exitOK
	}
}
