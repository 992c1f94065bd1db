package main

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/etcdlock/etcdlock/integration"
)

// scaleEnv returns a bench environment on the end-to-end tests' server,
// counting its watch events as the bench does.
func scaleEnv(t *testing.T) (*benchEnv, string) {
	t.Helper()
	srv := integration.NewServer(t, integration.WithoutFsync())
	e := &benchEnv{dial: func(opts []grpc.DialOption) (*clientv3.Client, error) {
		return srv.NewClient(func(c *clientv3.Config) { c.DialOptions = append(c.DialOptions, opts...) })
	}, endpoints: srv.Endpoints(), root: integration.Namespace(t)}
	e.tally.events, e.tally.fsyncs = serverEvents, serverFsyncs
	var err error
	if e.admin, err = e.newClient(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.admin.Close() })
	return e, e.root
}

// TestScaleSemaphoreEvents runs the semaphore's scale cell with 16
// clients and counts, with the server's own counter, the watch events per
// release: a waiter watches only the keys ahead whose permits keep it out
// (4 here) and its own keys, so a release reaches a handful of clients,
// where one watch of the whole prefix per client sent it to all 16. A
// release of one permit goes to the holder's own watch and to the windows
// holding it: at most the 4 waiters just behind it, 2.5 on average when
// the 4 holders release in any order (the first waiter watches all 4, the
// next 3 of them, and so on): 3.5 per release, at most 5.
func TestScaleSemaphoreEvents(t *testing.T) {
	if serverEvents() < 0 {
		t.Fatalf("the embedded server exports no %s", eventsMetric)
	}
	e, ns := scaleEnv(t)
	c := contendedWith("etcdlock-sem", "contended", 16, newSemLocker(4), nil)
	s, err := c.measure(context.Background(), e, ns, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.checkEmpty(ns); err != nil {
		t.Fatal(err)
	}
	if s.ops == 0 || s.reqs == nil || s.reqs.events < 0 {
		t.Fatalf("measured %d permits, requests %+v", s.ops, s.reqs)
	}
	f := summarizeScale(c, []sample{s})
	t.Logf("%d events for %d releases", s.reqs.events, s.ops)
	if f.EventsPerOp == nil || *f.EventsPerOp > 5 {
		t.Errorf("%d events for %d releases, want at most 5 per release (16: every client)", s.reqs.events, s.ops)
	}
}

// TestScaleHolds runs the holds cell with 50 holds: all are taken, their
// heap and goroutines are counted, and Close gives back every goroutine
// (the cell fails otherwise) and leaves no key.
func TestScaleHolds(t *testing.T) {
	e, ns := scaleEnv(t)
	c := manyHolds(50)
	s, err := c.measure(context.Background(), e, ns, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.checkEmpty(ns); err != nil {
		t.Fatal(err)
	}
	if s.ops != 50 || len(s.lat) != 50 {
		t.Fatalf("measured %d holds, %d latencies, want 50", s.ops, len(s.lat))
	}
	f := summarizeScale(c, []sample{s})
	if f.HeapPerHold == nil || f.GoroutinesPerHold == nil || f.EventsPerOp != nil {
		t.Errorf("holds figures %+v: want heap and goroutines per hold, no events", f)
	}
}
