package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/etcdlock/etcdlock/integration"
)

// devCmd is "etcdlock dev".
var devCmd = &command{
	name:    "dev",
	summary: "run a throwaway single-member etcd server to try etcdlock on",
	usage:   "etcdlock dev [flags]",
	help: `
Dev runs an embedded single-member etcd server listening for clients on
--listen (plain HTTP, no TLS, no authentication), so that every other
command can be tried across terminals with no etcd installed. It prints the
client endpoint alone on stdout, and notes on stderr, then serves until
interrupted (SIGINT, SIGTERM), when it stops the server cleanly and exits 0.

The data lives in a new temporary directory, removed at exit, written
without fsync; with --data-dir it lives in that directory (created if
needed, reused if it holds data), with fsync, and stays.

The default endpoint of the other commands is this server's default
--listen, 127.0.0.1:2379. With another --listen, point them at it with
--endpoints or $ETCDLOCK_ENDPOINTS. Not for production: one member, no
security. The exit status is 0, 2 for bad usage, 1 if the server cannot
start (e.g. the port is in use).`,
	setup: setupDev,
}

// setupDev defines dev's flags.
func setupDev(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) int {
	listen := fs.String("listen", defaultEndpoint, "serve clients on this `host:port` (port 0 picks a free one)")
	dataDir := fs.String("data-dir", "", "keep etcd's data in `dir` (default: a temporary directory, removed at exit)")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		host, port, err := net.SplitHostPort(*listen)
		if err != nil || host == "" {
			return badUsage(stderr, "dev", "--listen must be host:port, not %q", *listen)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
			return badUsage(stderr, "dev", "--listen %q: bad port", *listen)
		}
		opts := []integration.Option{integration.WithClientURL("http://" + net.JoinHostPort(host, port))}
		if *dataDir != "" {
			opts = append(opts, integration.WithDataDir(*dataDir))
		} else {
			opts = append(opts, integration.WithoutFsync())
		}
		srv, err := integration.StartServer(opts...)
		if err != nil {
			fmt.Fprintf(stderr, "etcdlock dev: %s\n", oneLine(err.Error()))
			return exitFailure
		}
		ep := srv.Endpoint()
		where := srv.Member().DataDir()
		if *dataDir == "" {
			where += " (removed at exit)"
		}
		fmt.Fprintln(stdout, ep)
		fmt.Fprintf(stderr, "etcdlock dev: etcd serves clients on %s; data in %s\n", ep, where)
		if *listen != defaultEndpoint {
			fmt.Fprintf(stderr, "etcdlock dev: in other terminals: export ETCDLOCK_ENDPOINTS=%s\n", ep)
		}
		fmt.Fprintln(stderr, "etcdlock dev: stop with Ctrl-C")
		<-ctx.Done()
		if err := srv.Close(); err != nil {
			fmt.Fprintf(stderr, "etcdlock dev: stopping etcd: %s\n", oneLine(err.Error()))
			return exitFailure
		}
		fmt.Fprintln(stderr, "etcdlock dev: stopped")
		return exitOK
	}
}
