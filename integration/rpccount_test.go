package integration_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/integration"
)

// A counting client counts each call it starts, once, by method, and Since
// reports only the calls after its snapshot.
func TestCountingClient(t *testing.T) {
	srv := integration.Shared(t)
	cli, calls := srv.CountingClient(t)
	ns := integration.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, ns+"k", "v"); err != nil {
		t.Fatal(err)
	}
	before := calls.Snapshot()
	if _, err := cli.Get(ctx, ns+"k"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, ns+"k"); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"/etcdserverpb.KV/Range": 1, "/etcdserverpb.KV/DeleteRange": 1}
	if got := calls.Since(before); !maps.Equal(got, want) {
		t.Fatalf("Since = %v, want %v", got, want)
	}
	if got := calls.Since(calls.Snapshot()); got != nil {
		t.Fatalf("Since a fresh snapshot = %v, want nil", got)
	}
	if n := calls.Snapshot()["/etcdserverpb.KV/Put"]; n != 1 {
		t.Fatalf("%d Puts counted, want 1", n)
	}
	integration.RequireEmpty(t, srv.Client(t), ns)
}
