package election_test

import (
	"slices"
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
