package fencing_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
)

// countingKV counts the transactions asked of it.
type countingKV struct {
	clientv3.KV
	txns atomic.Int64
}

func (c *countingKV) Txn(ctx context.Context) clientv3.Txn {
	c.txns.Add(1)
	return c.KV.Txn(ctx)
}

// TestBadInputCommit: Commit refuses a token not from a grant with
// ErrFenced, and a context that had already ended with its error
// (context.Cause), both without a round trip and applying nothing.
func TestBadInputCommit(t *testing.T) {
	cli := integration.Shared(t).Client(t)
	ns := integration.Namespace(t)
	defer integration.RequireEmpty(t, cli, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, ns+"holder", "h"); err != nil {
		t.Fatal(err)
	}
	defer cli.Delete(context.Background(), ns, clientv3.WithPrefix())
	resp, err := cli.Get(ctx, ns+"holder")
	if err != nil {
		t.Fatal(err)
	}
	good := fencing.Token{Key: ns + "holder", Revision: resp.Kvs[0].CreateRevision}

	cancelled, cancel1 := context.WithCancel(context.Background())
	cancel1()
	past, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	errWhy := errors.New("caller gave up")
	withCause, cancel3 := context.WithCancelCause(context.Background())
	cancel3(errWhy)

	cases := []struct {
		name string
		ctx  context.Context
		tok  fencing.Token
		want error
	}{
		{"zero token", ctx, fencing.Token{}, fencing.ErrFenced},
		{"no key", ctx, fencing.Token{Revision: good.Revision}, fencing.ErrFenced},
		{"zero revision", ctx, fencing.Token{Key: good.Key}, fencing.ErrFenced},
		{"negative revision", ctx, fencing.Token{Key: good.Key, Revision: -1}, fencing.ErrFenced},
		{"cancelled context", cancelled, good, context.Canceled},
		{"deadline past", past, good, context.DeadlineExceeded},
		{"cancelled with cause", withCause, good, errWhy},
	}
	for _, c := range cases {
		kv := &countingKV{KV: cli.KV}
		r, err := fencing.Commit(c.ctx, kv, c.tok, clientv3.OpPut(ns+"data", c.name))
		if !errors.Is(err, c.want) || r != nil {
			t.Errorf("Commit, %s = %v, %v; want nil, %v", c.name, r, err, c.want)
		}
		if n := kv.txns.Load(); n != 0 {
			t.Errorf("Commit, %s: %d transactions, want none", c.name, n)
		}
	}
	if r, err := cli.Get(ctx, ns+"data"); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("data after refused Commits = %v, %v; want none", r, err)
	}
	if _, err := fencing.Commit(ctx, cli, good, clientv3.OpPut(ns+"data", "ok")); err != nil {
		t.Fatalf("Commit with a good token: %v", err)
	}
}
