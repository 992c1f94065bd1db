package integration

import (
	"context"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

var shared struct {
	mu     sync.Mutex
	inMain bool
	opts   []Option
	srv    *Server
	err    error // sticky start error
}

// Main runs the tests of a package; call it from TestMain:
//
//	func TestMain(m *testing.M) { integration.Main(m) }
//
// It runs m.Run(). The shared server of [Shared] is started on first use,
// with opts plus [WithoutFsync]. After the tests Main closes the shared
// server, prints the error it reported while running if any (see
// [Member.Err]) and, if everything passed, checks that no goroutines leaked
// (with goleak and [GoleakOptions], ignoring goroutines that already ran
// before m.Run, and retrying for a while so that goroutines shutting down
// can finish). It then exits the process: with m.Run's code, or 1 if
// closing the server failed, the server reported an error or goroutines
// leaked (the leaked stacks are printed to stderr). Main never returns.
func Main(m *testing.M, opts ...Option) {
	os.Exit(runMain(m, opts))
}

func runMain(m *testing.M, opts []Option) int {
	shared.mu.Lock()
	shared.inMain = true
	shared.opts = opts
	shared.mu.Unlock()

	// Goroutines running before the tests (started by package init
	// functions, say) are not the tests' leaks.
	ignores := append(GoleakOptions(), goleak.IgnoreCurrent())

	code := m.Run()

	shared.mu.Lock()
	srv := shared.srv
	shared.srv = nil
	shared.inMain = false
	shared.mu.Unlock()
	if srv != nil {
		if err := srv.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: closing shared etcd server: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		if mb := srv.Member(); mb != nil {
			if err := mb.FirstFailure(); err != nil {
				fmt.Fprintf(os.Stderr, "integration: shared etcd server: %v\n", err)
				if code == 0 {
					code = 1
				}
			}
		}
	}
	if code == 0 {
		if err := goleak.Find(ignores...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	return code
}

// Shared returns the server shared by all tests of this test binary,
// starting it on first use (with [WithoutFsync] and the options given to
// [Main]). It is safe for concurrent use by parallel tests; the first
// caller blocks while the server starts. Tests must not close it (Main
// does) and should keep their keys under [Namespace]. Shared fails tb with
// tb.Fatalf when called outside [Main] or when the server cannot start
// (once it failed, every later call fails too).
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.inMain {
		tb.Fatalf("integration: Shared needs TestMain to call integration.Main(m)")
	}
	if shared.err != nil {
		tb.Fatalf("integration: shared etcd server failed to start: %v", shared.err)
	}
	if shared.srv == nil {
		opts := append(append([]Option(nil), shared.opts...), WithoutFsync())
		start := time.Now()
		srv, err := StartServer(opts...)
		if err != nil {
			shared.err = err
			tb.Fatalf("integration: starting shared etcd server: %v", err)
		}
		tb.Logf("integration: shared etcd server started in %v at %s", time.Since(start).Round(time.Millisecond), srv.Endpoint())
		shared.srv = srv
	}
	return shared.srv
}

var nsCounter atomic.Uint64

// maxNameLen bounds the test-name part of a namespace.
const maxNameLen = 80

// Namespace returns a key prefix unique to this call, of the form
// "t/<test name>/<n>/", where the test name is tb.Name() with every byte
// other than ASCII letters, digits, '-', '_' and '.' replaced by '_' (so it
// has no '/', and subtests do not nest into their parents' ranges) and
// shortened to 80 bytes, and n is a process-wide counter. Hence no
// namespace is a prefix of another one: the key ranges of two tests never
// overlap, even on a [Shared] server. It is safe for concurrent use.
func Namespace(tb testing.TB) string {
	name := []byte(tb.Name())
	if len(name) > maxNameLen {
		name = name[:maxNameLen]
	}
	for i, c := range name {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			name[i] = '_'
		}
	}
	return "t/" + string(name) + "/" + strconv.FormatUint(nsCounter.Add(1), 10) + "/"
}

// RequireEmptyTimeout bounds the read done by [RequireEmpty].
const RequireEmptyTimeout = 5 * time.Second

// maxListedKeys bounds how many keys RequireEmpty lists.
const maxListedKeys = 20

// RequireEmpty fails tb with tb.Errorf (the test goes on) if any key exists
// under prefix, listing up to 20 of them and the total count. It reads with
// a timeout of [RequireEmptyTimeout] and also fails tb if the read fails.
// An empty prefix means the whole keyspace. It blocks for at most that
// timeout and is safe for concurrent use.
func RequireEmpty(tb testing.TB, cli *clientv3.Client, prefix string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), RequireEmptyTimeout)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithLimit(maxListedKeys), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		tb.Errorf("integration: RequireEmpty(%q): reading keys: %v", prefix, err)
		return
	}
	if resp.Count == 0 {
		return
	}
	keys := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		keys[i] = strconv.Quote(string(kv.Key))
	}
	more := ""
	if resp.Count > int64(len(keys)) {
		more = fmt.Sprintf(", ... (%d more)", resp.Count-int64(len(keys)))
	}
	tb.Errorf("integration: RequireEmpty(%q): %d keys left: %s%s", prefix, resp.Count, strings.Join(keys, ", "), more)
}

// GoleakOptions returns the goleak options [Main] uses, for packages that
// run goleak themselves, e.g.
//
//	goleak.VerifyTestMain(m, integration.GoleakOptions()...)
//
// The list is currently empty, and deliberately so: embed.Etcd.Close waits
// for every goroutine of an embedded server (raft, apply, gRPC, peer
// transport, grpc-gateway), clientv3.Client.Close and [Proxy.Close] do the
// same for clients and proxies, and etcd v3.7 starts no background
// goroutines of its own at package init. So anything goleak reports after
// the servers, clients and proxies are closed is a real leak (typically a
// client, watch or session that a test did not close). The function exists
// so that ignores can be added here, each with its reason, should a future
// etcd or gRPC version need them, without changing callers.
func GoleakOptions() []goleak.Option {
	return append([]goleak.Option(nil), goleakIgnores...)
}

// goleakIgnores lists the goroutines that outlive closed servers, clients
// and proxies by design. None do with etcd v3.7.3 and grpc v1.83.
var goleakIgnores []goleak.Option

// Bounds of the wait before WaitKeyCount opens again a watch that closed.
const (
	rewatchMinBackoff = 10 * time.Millisecond
	rewatchMaxBackoff = 500 * time.Millisecond
)

// WaitKeyCount blocks until exactly n keys exist under prefix, watching the
// prefix rather than polling, and fails tb with tb.Fatalf if that takes
// longer than timeout or a read fails; call it from the test's goroutine.
// A watch that closes early (cancelled by the server, say) is opened
// again, after a wait that starts at 10 ms and doubles while watches keep
// closing, up to 500 ms. Tests use it to know that n waiters have queued.
// It is safe for concurrent use with other calls on cli.
func WaitKeyCount(tb testing.TB, cli *clientv3.Client, prefix string, n int64, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var have int64 = -1
	timedOut := func() {
		tb.Helper()
		tb.Fatalf("integration: waiting for %d keys under %s: have %d after %v", n, prefix, have, timeout)
	}
	var (
		w       clientv3.WatchChan
		wcancel context.CancelFunc = func() {}
		backoff time.Duration
	)
	defer func() { wcancel() }()
	// watch opens the watch, after the backoff if the last one closed, and
	// waits until it is created (or closed): every change from then on
	// wakes the loop.
	watch := func() {
		tb.Helper()
		wcancel()
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				timedOut()
			}
		}
		var wctx context.Context
		wctx, wcancel = context.WithCancel(ctx)
		w = cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		select {
		case _, ok := <-w:
			if ok {
				backoff = 0
			} else {
				backoff = min(max(2*backoff, rewatchMinBackoff), rewatchMaxBackoff)
			}
		case <-ctx.Done():
			timedOut()
		}
	}
	watch()
	for {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			if ctx.Err() != nil {
				timedOut()
			}
			tb.Fatalf("integration: counting keys under %s: %v", prefix, err)
		}
		have = resp.Count
		if have == n {
			return
		}
		select {
		case _, ok := <-w:
			if !ok {
				if backoff == 0 {
					backoff = rewatchMinBackoff
				}
				watch()
			}
		case <-ctx.Done():
			timedOut()
		}
	}
}

// StartExample starts a single-member server without fsync and returns a
// client of it, with a function that closes both: the preamble of a
// runnable Example, where production code would call clientv3.New. An
// Example has no testing.T: if the server does not start, StartExample
// exits the program with log.Fatal.
func StartExample() (cli *clientv3.Client, stop func()) {
	srv, err := StartServer(WithoutFsync())
	if err != nil {
		log.Fatal(err)
	}
	cli, err = srv.NewClient()
	if err != nil {
		_ = srv.Close()
		log.Fatal(err)
	}
	return cli, func() {
		_ = cli.Close()
		_ = srv.Close()
	}
}
