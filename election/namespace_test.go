package election_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/namespace"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
)

// An election works through clients wrapped by etcd's namespace package:
// an observer through a wrapped watch sees the leader and the handoff, the
// standby leads when the leader resigns, and nothing is left under the
// wrapper's prefix.
func TestNamespacedClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const wrap = "wrapped/"
	t.Cleanup(func() { integration.RequireEmpty(t, e.cli, wrap+e.ns) })
	wrapped := func() *election.Election {
		cli := e.client()
		cli.KV = namespace.NewKV(cli.KV, wrap)
		cli.Watcher = namespace.NewWatcher(cli.Watcher, wrap)
		cli.Lease = namespace.NewLease(cli.Lease, wrap)
		return e.election(cli)
	}
	a, b := wrapped(), wrapped()
	obs := a.Observe(ctxT(t, 10*time.Second))
	ta := mustCampaign(t, a, "a")
	next := make(chan *election.Term, 1)
	go func() {
		tb, err := b.Campaign(ctxT(t, 10*time.Second), "b")
		if err != nil {
			t.Errorf("Campaign: %v", err)
		}
		next <- tb
	}()
	waitKeys(t, e.cli, wrap+e.ns, 2)
	if err := ta.Resign(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	tb := <-next
	if tb == nil {
		return
	}
	var seen []string
	for l := range obs {
		seen = append(seen, l.Value)
		if l.Value == "b" {
			break
		}
	}
	if !slices.Contains(seen, "a") {
		t.Fatalf("observed %q, want a, then b", seen)
	}
	if err := tb.Resign(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// A namespace without a trailing '/' gets one: WithNamespace("app") puts
// the candidates under "app/election/...", where an election of
// namespace "app/" and Inspect under either spelling see them.
func TestNamespaceWithoutSlash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bare := strings.TrimSuffix(e.ns, "/")
	t.Cleanup(func() { integration.RequireEmpty(t, e.cli, bare) })
	a := e.election(e.cli, election.WithTTL(2*time.Second), election.WithNamespace(bare))
	b := e.election(e.cli, election.WithTTL(2*time.Second), election.WithNamespace(e.ns))
	ta := mustCampaign(t, a, "a")
	if !strings.HasPrefix(ta.Token().Key, e.ns+"election/") {
		t.Errorf("leader key %q is not under %q", ta.Token().Key, e.ns+"election/")
	}
	if got, want := election.KeyPrefix(bare, "leader"), e.ns+"election/leader/"; got != want {
		t.Errorf("KeyPrefix = %q, want %q", got, want)
	}
	l, err := b.Leader(ctxT(t, 5*time.Second))
	if err != nil || l.Value != "a" {
		t.Errorf("Leader seen with namespace %q: %+v, %v; want a", e.ns, l, err)
	}
	s, err := election.Inspect(ctxT(t, 5*time.Second), e.cli, bare, "leader")
	if err != nil || len(s.Candidates) != 1 || !s.Candidates[0].Leader {
		t.Errorf("Inspect under %q: %+v, %v; want the leader", bare, s, err)
	}
	if err := ta.Resign(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}
