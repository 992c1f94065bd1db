package queue

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/config"
)

// manyHolds takes one hold of each of n mutex-like Primitives on cli, on
// one session, under a new namespace (left empty at cleanup), and waits
// until every hold's monitor is in place.
func manyHolds(t *testing.T, cli *clientv3.Client, n int) ([]*Primitive, []*Hold) {
	t.Helper()
	ns := integration.Namespace(t)
	t.Cleanup(func() { integration.RequireEmpty(t, integration.Shared(t).Client(t), ns) })
	sess, err := concurrency.NewSession(cli)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	ps := make([]*Primitive, n)
	hs := make([]*Hold, n)
	for i := range n {
		p, err := NewPrimitive(cli, "mutex", fmt.Sprintf("m%d", i), Exclusive{}, KeyWatches, []config.Option{config.Namespace(ns), config.Session(sess)}, testPublic)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := p.Close(); err != nil {
				t.Error(err)
			}
		})
		ps[i], hs[i] = p, mustAcquire(t, p)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, h := range hs {
		for h.monitor() == nil {
			if time.Now().After(deadline) {
				t.Fatalf("the monitor of %v is not in place after 10s", h.Token())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return ps, hs
}

// monitor returns the hold's registration, if in place.
func (h *Hold) monitor() *sub {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sub
}

// Many holds of one client cost no goroutine each: their monitors are
// registrations called back by the client's hub, whose one stream carries
// every Primitive's own-key watch. Each still learns at once that another
// client deleted its key.
func TestHoldsShareOneWatchStream(t *testing.T) {
	cli, count := countingClient(t)
	const n = 40
	manyHolds(t, cli, 1) // the server, the session, the hub: up once for all
	g0 := runtime.NumGoroutine()
	streams0 := count.streams.Load()
	_, hs := manyHolds(t, cli, n)
	// Before: a watch goroutine per Primitive, one clientv3 goroutine per
	// watch, and a monitor goroutine per hold.
	// Short-lived goroutines (a keeper's sweep, gRPC's own) come and go:
	// the count must settle at or under the bound, where a goroutine per
	// hold would keep it at n or more.
	settle := time.Now().Add(5 * time.Second)
	g := runtime.NumGoroutine() - g0
	for g > 6 && time.Now().Before(settle) {
		time.Sleep(10 * time.Millisecond)
		g = runtime.NumGoroutine() - g0
	}
	if g > 6 {
		t.Errorf("%d holds added %d goroutines, want at most 6 in all", n, g)
	}
	if s := count.streams.Load() - streams0; s > 1 {
		t.Errorf("%d holds opened %d watch streams, want at most 1", n, s)
	}
	admin := integration.Shared(t).Client(t)
	for _, h := range hs {
		if _, err := admin.Delete(ctxT(t, 5*time.Second), h.Token().Key); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range hs {
		select {
		case <-h.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("hold %v: Done not closed 10s after its key was deleted", h.Token())
		}
		if err := h.Err(); !errors.Is(err, ErrDeleted) {
			t.Errorf("hold %v: Err() = %v, want ErrDeleted", h.Token(), err)
		}
	}
}

// When the hub's stream breaks, the watches are created again from where
// they were: a delete made while the stream was down reaches the hold, and
// the hold's registration was never voided (no read of its key).
func TestHubResumesAfterBreak(t *testing.T) {
	cli := integration.Shared(t).Client(t)
	ps, hs := manyHolds(t, cli, 3)
	hub := ps[0].Q.kw.last.hub
	admin := integration.Shared(t).Client(t)
	victim := hs[1]
	subs := make([]*sub, len(hs))
	for i, h := range hs {
		subs[i] = h.monitor()
	}
	deleted := make(chan error, 1)
	hub.mu.Lock()
	hub.beforeReopen = func() {
		_, err := admin.Delete(ctxT(t, 5*time.Second), victim.Token().Key)
		deleted <- err
	}
	end := hub.endStream
	hub.mu.Unlock()
	end()
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	hub.mu.Lock()
	hub.beforeReopen = nil
	hub.mu.Unlock()
	select {
	case <-victim.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the hold whose key was deleted while the stream was down was not told within 10s")
	}
	if err := victim.Err(); !errors.Is(err, ErrDeleted) {
		t.Fatalf("Err() = %v, want ErrDeleted", err)
	}
	for i, h := range hs {
		if h == victim {
			continue
		}
		if h.Err() != nil {
			t.Errorf("hold %v lost: %v", h.Token(), h.Err())
		}
		if s := h.monitor(); s != subs[i] || s.state().broken {
			t.Errorf("hold %v: registration replaced or void after the break", h.Token())
		}
	}
}
