package integration_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
)

// countingKV counts the Gets made through it.
type countingKV struct {
	clientv3.KV
	gets atomic.Int64
}

func (kv *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	kv.gets.Add(1)
	return kv.KV.Get(ctx, key, opts...)
}

// closingWatcher hands out already closed watch channels for its first
// closeFirst Watch calls (all of them if closeFirst < 0), as the client
// does for a watch the server cancelled, and real watches afterwards. It
// sends on called after each call, if there is room.
type closingWatcher struct {
	clientv3.Watcher
	closeFirst int64
	calls      atomic.Int64
	called     chan struct{}
}

func (w *closingWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	n := w.calls.Add(1)
	defer func() {
		select {
		case w.called <- struct{}{}:
		default:
		}
	}()
	if w.closeFirst < 0 || n <= w.closeFirst {
		ch := make(chan clientv3.WatchResponse)
		close(ch)
		return ch
	}
	return w.Watcher.Watch(ctx, key, opts...)
}

// When its watches close at once, WaitKeyCount still waits between two
// reads of the count, until its timeout, instead of reading in a loop.
func TestWaitKeyCountWatchClosed(t *testing.T) {
	cli := integration.Shared(t).Client(t)
	ns := integration.Namespace(t)
	kv := &countingKV{KV: cli.KV}
	cli.KV = kv
	cli.Watcher = &closingWatcher{Watcher: cli.Watcher, closeFirst: -1, called: make(chan struct{}, 1)}

	// No key ever appears under ns.
	const timeout = time.Second
	tb := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		integration.WaitKeyCount(tb, cli, ns, 1, timeout)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("WaitKeyCount with a timeout of %v still running after 30s", timeout)
	}
	if len(tb.fatals) != 1 {
		t.Fatalf("WaitKeyCount failed %d times (%q), want once", len(tb.fatals), tb.fatals)
	}
	// Backing off from 10 ms, doubling, allows about ten reads in 1 s; a
	// read in a loop does thousands.
	if n := kv.gets.Load(); n > 50 {
		t.Errorf("WaitKeyCount read the count %d times in its %v with closed watches, want it to wait between reads", n, timeout)
	}
}

// A watch that closes early is opened again, and the key that appears
// afterwards ends WaitKeyCount.
func TestWaitKeyCountReopensWatch(t *testing.T) {
	srv := integration.Shared(t)
	cli := srv.Client(t)
	direct := srv.Client(t)
	ns := integration.Namespace(t)
	w := &closingWatcher{Watcher: cli.Watcher, closeFirst: 1, called: make(chan struct{}, 2)}
	cli.Watcher = w

	tb := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		integration.WaitKeyCount(tb, cli, ns, 1, 20*time.Second)
	}()
	for range 2 { // the closed watch, then the one opened again
		select {
		case <-w.called:
		case <-done:
			t.Fatalf("WaitKeyCount returned before it opened a second watch: %q", tb.fatals)
		}
	}
	mustPut(t, direct, ns+"k", "v")
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("WaitKeyCount still running 30s after the key appeared")
	}
	if len(tb.fatals) != 0 {
		t.Fatalf("WaitKeyCount failed: %q", tb.fatals)
	}
	if _, err := direct.Delete(ctxT(t, 5*time.Second), ns+"k"); err != nil {
		t.Fatal(err)
	}
	integration.RequireEmpty(t, direct, ns)
}
