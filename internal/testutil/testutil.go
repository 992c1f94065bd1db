// Package testutil holds the test helpers that the tests of lock and
// election share: a test's client and namespace on the shared embedded
// server, bounded contexts, waits on key counts and channels, sessions, and
// contexts that have already ended. Only tests import it.
package testutil

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/integration"
)

// Env returns a client of the shared server (see integration.Shared) and a
// namespace of t's own, which must be empty when t ends: a cleanup fails t
// otherwise.
func Env(t *testing.T) (*clientv3.Client, string) {
	t.Helper()
	cli, ns := integration.Shared(t).Client(t), integration.Namespace(t)
	t.Cleanup(func() { integration.RequireEmpty(t, cli, ns) })
	return cli, ns
}

// Client returns another client of the shared server, closed at cleanup.
func Client(t *testing.T) *clientv3.Client { return integration.Shared(t).Client(t) }

// RPCClient returns a client of the shared server whose requests are
// counted, closed at cleanup.
func RPCClient(t *testing.T) (*clientv3.Client, *integration.RPCCounter) {
	t.Helper()
	return integration.Shared(t).CountingClient(t)
}

// Ctx returns a context that ends after d, or at t's cleanup.
func Ctx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitKeys blocks until n keys exist under prefix, failing t after 10 s.
func WaitKeys(t *testing.T, cli *clientv3.Client, prefix string, n int64) {
	t.Helper()
	integration.WaitKeyCount(t, cli, prefix, n, 10*time.Second)
}

// WaitClosed blocks until ch is closed, failing t after d.
func WaitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not closed within %v", what, d)
	}
}

// NewSession returns a session of 10 s TTL on cli, closed at cleanup (a
// revoked session's Close fails, which the cleanup ignores).
func NewSession(t *testing.T, cli *clientv3.Client) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// EndedContext is a context that ended before the call it is passed to,
// and the error the call must match.
type EndedContext struct {
	Name string
	Ctx  context.Context
	Want error
}

// EndedContexts returns a cancelled context, one past its deadline and
// one cancelled with a cause of its own.
func EndedContexts() []EndedContext {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	past, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	_ = cancel2 // ended already; nothing to release
	errWhy := errors.New("caller gave up")
	withCause, cancel3 := context.WithCancelCause(context.Background())
	cancel3(errWhy)
	return []EndedContext{
		{"cancelled", cancelled, context.Canceled},
		{"deadline past", past, context.DeadlineExceeded},
		{"cancelled with cause", withCause, errWhy},
	}
}
