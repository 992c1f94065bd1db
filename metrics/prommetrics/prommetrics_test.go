package prommetrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
	itest "github.com/etcdlock/etcdlock/internal/testutil"
	"github.com/etcdlock/etcdlock/lock"
	"github.com/etcdlock/etcdlock/metrics"
	"github.com/etcdlock/etcdlock/metrics/prommetrics"
)

func TestMain(m *testing.M) { integration.Main(m) }

var ctxT = itest.Ctx

// observer is a prommetrics.Metrics on a registry of the test's own that
// also hands every event to the test, which waits on them rather than on
// time.
type observer struct {
	*prommetrics.Metrics
	reg      *prometheus.Registry
	acquired chan metrics.AcquireEvent
	ended    chan metrics.EndEvent
	renewed  chan metrics.RenewEvent
}

func newObserver(t *testing.T, opts ...prommetrics.Option) *observer {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := prommetrics.New(reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &observer{Metrics: m, reg: reg,
		acquired: make(chan metrics.AcquireEvent, 100),
		ended:    make(chan metrics.EndEvent, 100),
		renewed:  make(chan metrics.RenewEvent, 1)}
}

func (o *observer) Acquired(ev metrics.AcquireEvent) {
	o.Metrics.Acquired(ev)
	o.acquired <- ev
}

func (o *observer) Ended(ev metrics.EndEvent) {
	o.Metrics.Ended(ev)
	o.ended <- ev
}

func (o *observer) LeaseRenewed(ev metrics.RenewEvent) {
	o.Metrics.LeaseRenewed(ev)
	select { // the latest is enough
	case o.renewed <- ev:
	default:
	}
}

// waitEnd returns the next end reported, failing t after 10 s.
func (o *observer) waitEnd(t *testing.T) metrics.EndEvent {
	t.Helper()
	select {
	case ev := <-o.ended:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no end of a hold reported within 10s")
	}
	return metrics.EndEvent{}
}

// series returns the gathered value of metric name with exactly labels
// (name=value pairs), or -1 if there is no such series; every series of
// the registry must have label names among allowed.
func series(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels)/2 {
				continue
			}
			for _, lp := range m.GetLabel() {
				found := false
				for i := 0; i < len(labels); i += 2 {
					if labels[i] == lp.GetName() && labels[i+1] == lp.GetValue() {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

func want(t *testing.T, reg *prometheus.Registry, v float64, name string, labels ...string) {
	t.Helper()
	if got := series(t, reg, name, labels...); got != v {
		t.Errorf("%s%v = %v, want %v", name, labels, got, v)
	}
}

func newMutex(t *testing.T, cli *clientv3.Client, ns, name string, opts ...lock.Option) *lock.Mutex {
	t.Helper()
	m, err := lock.NewMutex(cli, name, append([]lock.Option{lock.WithNamespace(ns)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// TestGrantAndUnlock: a grant, a refused try and an unlock move the
// counters, the holds gauge and both histograms; no series has a name
// label.
func TestGrantAndUnlock(t *testing.T) {
	cli, ns := itest.Env(t)
	o := newObserver(t)
	m := newMutex(t, cli, ns, "job", lock.WithMetrics(o), lock.WithTTL(2*time.Second))
	h, err := m.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want(t, o.reg, 1, "etcdlock_acquires_total", "kind", "mutex", "result", "granted")
	want(t, o.reg, 1, "etcdlock_acquire_wait_seconds", "kind", "mutex")
	want(t, o.reg, 1, "etcdlock_holds", "kind", "mutex")
	if _, err := m.TryLock(ctxT(t, 10*time.Second)); err == nil {
		t.Fatal("TryLock of a held mutex succeeded")
	}
	want(t, o.reg, 1, "etcdlock_acquires_total", "kind", "mutex", "result", "locked")

	// The lease's renewals (every TTL/3) report the time that was left.
	select {
	case ev := <-o.renewed:
		if ev.Left <= 0 || ev.Left > 2*time.Second {
			t.Errorf("lease renewed with %v left, want in (0, 2s]", ev.Left)
		}
		if got := series(t, o.reg, "etcdlock_lease_remaining_seconds", "kind", "mutex"); got <= 0 || got > 2 {
			t.Errorf("etcdlock_lease_remaining_seconds = %v, want in (0, 2]", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal reported within 10s (TTL 2s)")
	}

	if err := h.Unlock(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ev := o.waitEnd(t); ev.Cause != metrics.Released || ev.Kind != "mutex" || ev.Name != "job" {
		t.Errorf("end %+v, want a release of mutex job", ev)
	}
	want(t, o.reg, 0, "etcdlock_holds", "kind", "mutex")
	want(t, o.reg, 1, "etcdlock_releases_total", "kind", "mutex")
	want(t, o.reg, 1, "etcdlock_hold_seconds", "kind", "mutex")
	want(t, o.reg, -1, "etcdlock_losses_total", "kind", "mutex", "cause", "key_deleted")
	noNameLabel(t, o.reg)
}

// noNameLabel fails t if a series of reg has a label "name".
func noNameLabel(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "name" {
					t.Errorf("%s has a name label (%s) without WithNameLabel", mf.GetName(), lp.GetValue())
				}
			}
		}
	}
}

// TestLossCauses: a hold whose key another client deletes is counted as
// lost with key_deleted; one whose lease is revoked, with lease_gone,
// though its key's deletion is seen first; one past its maximum hold, with
// max_hold.
func TestLossCauses(t *testing.T) {
	cli, ns := itest.Env(t)
	o := newObserver(t)
	m := newMutex(t, cli, ns, "loss", lock.WithMetrics(o), lock.WithTTL(5*time.Second))

	lose := func(how string, end func(h *lock.Hold), cause metrics.Cause) {
		t.Helper()
		h, err := m.Lock(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		end(h)
		itest.WaitClosed(t, h.Done(), 10*time.Second, how)
		ev := o.waitEnd(t)
		if ev.Cause != cause {
			t.Errorf("%s: counted as %q, want %q (hold's error: %v)", how, ev.Cause, cause, h.Err())
		}
		if !strings.Contains(h.Err().Error(), "lost") {
			t.Errorf("%s: Err = %v, want a loss", how, h.Err())
		}
	}
	lose("key deleted", func(h *lock.Hold) {
		if _, err := cli.Delete(ctxT(t, 5*time.Second), h.Token().Key); err != nil {
			t.Fatal(err)
		}
	}, metrics.LostKeyDeleted)
	lose("lease revoked", func(h *lock.Hold) {
		if _, err := cli.Revoke(ctxT(t, 5*time.Second), h.Lease()); err != nil {
			t.Fatal(err)
		}
	}, metrics.LostLeaseGone)
	want(t, o.reg, 1, "etcdlock_losses_total", "kind", "mutex", "cause", "key_deleted")
	want(t, o.reg, 1, "etcdlock_losses_total", "kind", "mutex", "cause", "lease_gone")
	want(t, o.reg, 0, "etcdlock_holds", "kind", "mutex")
	want(t, o.reg, 2, "etcdlock_hold_seconds", "kind", "mutex")
	want(t, o.reg, -1, "etcdlock_releases_total", "kind", "mutex")

	mh := newMutex(t, cli, ns, "max", lock.WithMetrics(o), lock.WithMaxHold(200*time.Millisecond))
	h, err := mh.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	itest.WaitClosed(t, h.Done(), 10*time.Second, "max hold")
	if ev := o.waitEnd(t); ev.Cause != metrics.LostMaxHold || ev.Held < 200*time.Millisecond {
		t.Errorf("end %+v, want max_hold after at least 200ms", ev)
	}
	want(t, o.reg, 1, "etcdlock_losses_total", "kind", "mutex", "cause", "max_hold")
}

// TestLossByDeadline: a holder cut off from etcd loses its hold when its
// lease's deadline passes, counted as deadline.
func TestLossByDeadline(t *testing.T) {
	_, ns := itest.Env(t)
	p := integration.NewProxy(t, integration.Shared(t).Endpoint())
	cli := p.Client(t)
	defer p.Unblackhole() // before the Mutex's Close
	o := newObserver(t)
	m := newMutex(t, cli, ns, "cut", lock.WithMetrics(o), lock.WithTTL(2*time.Second))
	h, err := m.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	itest.WaitClosed(t, h.Done(), 10*time.Second, "hold cut off")
	if ev := o.waitEnd(t); ev.Cause != metrics.LostDeadline {
		t.Errorf("end %+v, want deadline (hold's error: %v)", ev, h.Err())
	}
	want(t, o.reg, 1, "etcdlock_losses_total", "kind", "mutex", "cause", "deadline")
}

// TestElectionLeader: the leader gauge is 1 while a term is current and 0
// after Resign; a standby that takes over counts a failover; with
// WithNameLabel every series names its election.
func TestElectionLeader(t *testing.T) {
	cli, ns := itest.Env(t)
	o := newObserver(t, prommetrics.WithNameLabel())
	newElection := func() *election.Election {
		e, err := election.New(cli, "leader", election.WithNamespace(ns), election.WithTTL(2*time.Second), election.WithMetrics(o))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := e.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return e
	}
	a, b := newElection(), newElection()
	leader := func() float64 { return series(t, o.reg, "etcdlock_election_leader", "name", "leader") }
	if got, err := testutil.GatherAndCount(o.reg, "etcdlock_election_leader"); err != nil || got != 0 {
		t.Errorf("leader gauge before any term = %v, want no series", got)
	}
	ta, err := a.Campaign(ctxT(t, 10*time.Second), "a")
	if err != nil {
		t.Fatal(err)
	}
	<-o.acquired
	if got := leader(); got != 1 {
		t.Errorf("leader gauge while leading = %v, want 1", got)
	}
	won := make(chan *election.Term, 1)
	go func() {
		tb, err := b.Campaign(ctxT(t, 10*time.Second), "b")
		if err != nil {
			t.Errorf("Campaign b: %v", err)
		}
		won <- tb
	}()
	itest.WaitKeys(t, cli, a.Prefix(), 2)
	if err := ta.Resign(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ev := o.waitEnd(t); ev.Cause != metrics.Released || ev.Kind != "election" {
		t.Errorf("end %+v, want a resign", ev)
	}
	tb := <-won
	if tb == nil {
		return
	}
	<-o.acquired
	want(t, o.reg, 1, "etcdlock_election_leader", "name", "leader")
	want(t, o.reg, 2, "etcdlock_election_terms_started_total", "name", "leader")
	want(t, o.reg, 1, "etcdlock_election_failovers_total", "name", "leader")
	want(t, o.reg, 2, "etcdlock_acquires_total", "kind", "election", "name", "leader", "result", "granted")
	if err := tb.Resign(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	o.waitEnd(t)
	if got := leader(); got != 0 {
		t.Errorf("leader gauge after Resign = %v, want 0", got)
	}
	want(t, o.reg, 2, "etcdlock_releases_total", "kind", "election", "name", "leader")
}

// TestNoExtraRequests: with metrics, Lock and Unlock send the requests
// they send without.
func TestNoExtraRequests(t *testing.T) {
	_, ns := itest.Env(t)
	count := func(opts ...lock.Option) map[string]int {
		cli, rpcs := itest.RPCClient(t)
		m := newMutex(t, cli, ns, "rpc", opts...)
		h, err := m.Lock(ctxT(t, 10*time.Second)) // grants the lease
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Unlock(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		before := rpcs.Snapshot()
		for range 5 {
			h, err := m.Lock(ctxT(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Millisecond) // past the delay before a hold watches its key
			if err := h.Unlock(ctxT(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		return rpcs.Since(before)
	}
	without := count()
	with := count(lock.WithMetrics(newObserver(t)))
	if len(with) != len(without) {
		t.Fatalf("requests with metrics %v, without %v", with, without)
	}
	for k, v := range without {
		if with[k] != v {
			t.Errorf("requests with metrics %v, without %v", with, without)
		}
	}
}

// TestNew: a second New on one registry fails, and a nil observer is an
// invalid option.
func TestNew(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := prommetrics.New(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := prommetrics.New(reg); err == nil {
		t.Error("second New on one registry succeeded")
	}
	cli, ns := itest.Env(t)
	if _, err := lock.NewMutex(cli, "x", lock.WithNamespace(ns), lock.WithMetrics(nil)); !strings.Contains(fmtErr(err), "invalid option") {
		t.Errorf("WithMetrics(nil) = %v, want ErrInvalidOption", err)
	}
	if _, err := election.New(cli, "x", election.WithNamespace(ns), election.WithMetrics(nil)); err == nil {
		t.Error("election.WithMetrics(nil) accepted")
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// BenchmarkLockUnlock compares an uncontended Lock and Unlock without
// metrics, with the Nop observer and with Prometheus collectors: compare
// the ratios of one run, never the absolute times.
func BenchmarkLockUnlock(b *testing.B) {
	for _, c := range []struct {
		name string
		opts func() []lock.Option
	}{
		{"none", func() []lock.Option { return nil }},
		{"nop", func() []lock.Option { return []lock.Option{lock.WithMetrics(metrics.Nop{})} }},
		{"prometheus", func() []lock.Option {
			m, err := prommetrics.New(prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			return []lock.Option{lock.WithMetrics(m)}
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			cli := integration.Shared(b).Client(b)
			m, err := lock.NewMutex(cli, "bench", append([]lock.Option{lock.WithNamespace(integration.Namespace(b))}, c.opts()...)...)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			ctx := context.Background()
			for b.Loop() {
				h, err := m.Lock(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := h.Unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
