package integration_test

import (
	"strings"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/integration"
)

// errWait bounds the wait for a server to report the failure a test caused.
const errWait = 10 * time.Second

// waitErr waits until errf returns an error, polling every millisecond for
// at most errWait, and returns it. embed reports the failure of a serving
// goroutine as soon as it returns, so the wait is short.
func waitErr(t *testing.T, what string, errf func() error) error {
	t.Helper()
	deadline := time.Now().Add(errWait)
	for {
		if err := errf(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no error reported within %v", what, errWait)
		}
		time.Sleep(time.Millisecond)
	}
}

// breakClients closes the client listeners of m's running server from under
// it: its serving goroutines fail and embed reports that on its Err channel.
func breakClients(t *testing.T, m *integration.Member) {
	t.Helper()
	e := m.Etcd()
	if e == nil || len(e.Clients) == 0 {
		t.Fatalf("member %s: no running server with client listeners", m.Name())
	}
	for _, l := range e.Clients {
		if err := l.Close(); err != nil {
			t.Fatalf("member %s: closing client listener: %v", m.Name(), err)
		}
	}
}

// requireNoErr fails the test if the member reports an error.
func requireNoErr(t *testing.T, m *integration.Member, when string) {
	t.Helper()
	if err := m.Err(); err != nil {
		t.Fatalf("member %s %s: Err() = %v, want nil", m.Name(), when, err)
	}
}

// A server whose client listener fails after startup reports it through
// Err, until it restarts; stopping, hard-stopping, restarting and closing
// on purpose report nothing.
func TestServerErrReportsListenerFailure(t *testing.T) {
	s, err := integration.StartServer(integration.WithoutFsync())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	m := s.Member()
	cli, err := s.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	mustPut(t, cli, "k", "v")

	// On purpose: none of these is a failure. HardStop closes the client
	// listeners before etcd's own Close, like the failure below does.
	requireNoErr(t, m, "after start")
	ctx := ctxT(t, 20*time.Second)
	for _, stop := range []struct {
		name string
		f    func() error
	}{{"Stop", m.Stop}, {"HardStop", m.HardStop}} {
		if err := stop.f(); err != nil {
			t.Fatal(err)
		}
		requireNoErr(t, m, "after "+stop.name)
		if err := m.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		requireNoErr(t, m, "restarted after "+stop.name)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("Server.Err() = %v, want nil", err)
	}

	breakClients(t, m)
	err = waitErr(t, "client listener closed", m.Err)
	t.Logf("Err after the client listener failed: %v", err)
	if !strings.Contains(err.Error(), "member "+m.Name()) {
		t.Errorf("Err() = %q, want it to name member %s", err, m.Name())
	}
	if got := s.Err(); got == nil || got.Error() != err.Error() {
		t.Errorf("Server.Err() = %v, want %v", got, err)
	}
	if !m.Running() {
		t.Error("member not running after its listener failed; Err must not stop it")
	}

	// The error stays once the member stops, until it restarts.
	if err := m.HardStop(); err != nil {
		t.Fatal(err)
	}
	if got := m.Err(); got == nil || got.Error() != err.Error() {
		t.Errorf("after HardStop: Err() = %v, want %v", got, err)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	requireNoErr(t, m, "restarted after its failure")
	putRetry(t, cli, "k", "v2")

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	requireNoErr(t, m, "after Close")
}

// In a cluster, the failure of one member's peer listener is reported by
// that member only; closing the cluster (which stops members hard, closing
// their listeners first) reports nothing for the others.
func TestClusterMemberErrReportsPeerListenerFailure(t *testing.T) {
	c, err := integration.StartCluster(3, integration.WithoutFsync())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ms := c.Members()
	ctx := ctxT(t, 20*time.Second)
	lead, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Stop and restart the leader on purpose, hard.
	if err := ms[lead].HardStop(); err != nil {
		t.Fatal(err)
	}
	if err := ms[lead].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		requireNoErr(t, m, "after a hard restart of the leader")
	}

	broken := ms[(lead+1)%3]
	e := broken.Etcd()
	if len(e.Peers) == 0 {
		t.Fatalf("member %s has no peer listener", broken.Name())
	}
	for _, p := range e.Peers {
		if err := p.Close(); err != nil {
			t.Fatalf("closing the peer listener of %s: %v", broken.Name(), err)
		}
	}
	err = waitErr(t, "peer listener closed", broken.Err)
	t.Logf("Err after the peer listener failed: %v", err)
	if !strings.Contains(err.Error(), "member "+broken.Name()) {
		t.Errorf("Err() = %q, want it to name member %s", err, broken.Name())
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m == broken {
			if got := m.Err(); got == nil || got.Error() != err.Error() {
				t.Errorf("member %s after Close: Err() = %v, want %v", m.Name(), got, err)
			}
			continue
		}
		requireNoErr(t, m, "after Close")
	}
}

// NewServer and NewCluster fail their test at cleanup, naming the member,
// when a member's server failed while the test ran, even if the member was
// restarted since; members stopped and restarted on purpose fail nothing.
func TestNewServerAndClusterReportFailureAtCleanup(t *testing.T) {
	for _, tc := range []struct {
		name   string
		member string // whose failure the cleanup reports; "" for none
		start  func(tb testing.TB) *integration.Member
		body   func(t *testing.T, m *integration.Member)
	}{{
		name:   "server broken",
		member: "default",
		start: func(tb testing.TB) *integration.Member {
			return integration.NewServer(tb, integration.WithoutFsync()).Member()
		},
		body: func(t *testing.T, m *integration.Member) {
			breakClients(t, m)
			waitErr(t, "client listener closed", m.Err)
		},
	}, {
		name:   "cluster member broken then restarted",
		member: "m0",
		start: func(tb testing.TB) *integration.Member {
			return integration.NewCluster(tb, 1, integration.WithoutFsync()).Member(0)
		},
		body: func(t *testing.T, m *integration.Member) {
			breakClients(t, m)
			waitErr(t, "client listener closed", m.Err)
			if err := m.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := m.Restart(ctxT(t, 20*time.Second)); err != nil {
				t.Fatal(err)
			}
			requireNoErr(t, m, "restarted")
		},
	}, {
		name: "server stopped on purpose",
		start: func(tb testing.TB) *integration.Member {
			return integration.NewServer(tb, integration.WithoutFsync()).Member()
		},
		body: func(t *testing.T, m *integration.Member) {
			if err := m.HardStop(); err != nil {
				t.Fatal(err)
			}
			if err := m.Restart(ctxT(t, 20*time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := m.Stop(); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "cluster member stopped on purpose",
		start: func(tb testing.TB) *integration.Member {
			return integration.NewCluster(tb, 1, integration.WithoutFsync()).Member(0)
		},
		body: func(t *testing.T, m *integration.Member) {
			if err := m.HardStop(); err != nil {
				t.Fatal(err)
			}
			if err := m.Restart(ctxT(t, 20*time.Second)); err != nil {
				t.Fatal(err)
			}
		},
	}} {
		var rec *recordingTB
		t.Run(tc.name, func(t *testing.T) {
			rec = &recordingTB{TB: t}
			m := tc.start(rec)
			if len(rec.fatals) != 0 {
				t.Fatalf("start: %q", rec.fatals)
			}
			tc.body(t, m)
		}) // the cleanup of the constructor has run
		rec.mu.Lock()
		errs, fatals := rec.errs, rec.fatals
		rec.mu.Unlock()
		if len(fatals) != 0 {
			t.Errorf("%s: Fatalf calls %q, want none", tc.name, fatals)
		}
		switch {
		case tc.member == "" && len(errs) != 0:
			t.Errorf("%s: Errorf calls %q, want none", tc.name, errs)
		case tc.member != "" && (len(errs) != 1 || !strings.Contains(errs[0], "member "+tc.member+":")):
			t.Errorf("%s: Errorf calls %q, want one naming member %s", tc.name, errs, tc.member)
		case tc.member != "":
			t.Logf("%s: cleanup reported: %s", tc.name, errs[0])
		}
	}
}
