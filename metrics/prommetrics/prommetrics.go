// Package prommetrics exports the events of package metrics to Prometheus:
// New registers the collectors with a Registerer of the caller's (never the
// global one unless the caller passes it) and returns the Observer to give
// to lock.WithMetrics and election.WithMetrics.
//
// Metrics (label kind: mutex, rw, sem or election; label name: the lock's
// or election's name, only with WithNameLabel):
//
//	etcdlock_acquires_total{kind,result}        acquires by result: granted, locked,
//	                                            cancelled, deadline, session_expired,
//	                                            deleted, closed, error
//	etcdlock_acquire_wait_seconds{kind}         histogram: time from the call to the
//	                                            grant, of granted acquires
//	etcdlock_holds{kind}                        holds (and terms) held now
//	etcdlock_hold_seconds{kind}                 histogram: time from grant to end
//	etcdlock_releases_total{kind}               holds ended by Unlock, Resign or Close
//	etcdlock_losses_total{kind,cause}           holds lost, by cause: deadline,
//	                                            key_deleted, lease_gone, max_hold, other
//	etcdlock_lease_remaining_seconds{kind}      time that was left before the lease's
//	                                            deadline at its last renewal
//	etcdlock_election_leader                    terms this process leads now (0 or 1
//	                                            for one election)
//	etcdlock_election_terms_started_total       terms won
//	etcdlock_election_failovers_total           terms won after waiting behind another
//	                                            leader's term
//
// The election metrics carry only the name label, when enabled. A name is
// a label value only with WithNameLabel: each name is a series of its own,
// so use it only for a bounded set of names.
package prommetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdlock/etcdlock/metrics"
)

// Option configures New.
type Option func(*options)

type options struct {
	name        bool
	waitBuckets []float64
	holdBuckets []float64
}

// WithNameLabel adds the label "name", the lock's or election's name, to
// every metric. Optional: by default series are per kind only, so that
// locks named after users, jobs or keys cannot make the series unbounded.
func WithNameLabel() Option { return func(o *options) { o.name = true } }

// WithBuckets sets the upper bounds, in seconds, of the wait-time and
// hold-time histograms. Optional: by default 1ms to about 4.4 min for the
// wait and 10ms to about 44 min for the hold, each bound 4 times the last.
func WithBuckets(wait, hold []float64) Option {
	return func(o *options) { o.waitBuckets, o.holdBuckets = wait, hold }
}

// Metrics is a metrics.Observer that updates Prometheus collectors. It is
// safe for concurrent use; one Metrics may serve any number of locks and
// elections.
type Metrics struct {
	name bool

	acquires       *prometheus.CounterVec
	wait           *prometheus.HistogramVec
	holds          *prometheus.GaugeVec
	held           *prometheus.HistogramVec
	releases       *prometheus.CounterVec
	losses         *prometheus.CounterVec
	leaseRemaining *prometheus.GaugeVec
	leader         *prometheus.GaugeVec
	terms          *prometheus.CounterVec
	failovers      *prometheus.CounterVec
}

var _ metrics.Observer = (*Metrics)(nil)

// New makes the collectors and registers them with reg. It returns reg's
// error if registration fails (a second New on the same registry, say:
// share one Metrics instead).
func New(reg prometheus.Registerer, opts ...Option) (*Metrics, error) {
	o := options{
		waitBuckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		holdBuckets: prometheus.ExponentialBuckets(0.01, 4, 10),
	}
	for _, opt := range opts {
		opt(&o)
	}
	kind := []string{"kind"}
	var elect []string
	if o.name {
		kind = append(kind, "name")
		elect = []string{"name"}
	}
	with := func(extra string) []string { return append(append([]string{}, kind...), extra) }
	m := &Metrics{
		name: o.name,
		acquires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdlock_acquires_total",
			Help: "Acquires (Lock, TryLock, Acquire, Campaign...) by result.",
		}, with("result")),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "etcdlock_acquire_wait_seconds",
			Help:    "Time from an acquire's call to its grant, of granted acquires.",
			Buckets: o.waitBuckets,
		}, kind),
		holds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdlock_holds",
			Help: "Holds (and election terms) held now.",
		}, kind),
		held: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "etcdlock_hold_seconds",
			Help:    "Time from a hold's grant to its release or loss.",
			Buckets: o.holdBuckets,
		}, kind),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdlock_releases_total",
			Help: "Holds ended by Unlock, Resign or Close.",
		}, kind),
		losses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdlock_losses_total",
			Help: "Holds lost, by cause: deadline (lease renewal deadline passed), key_deleted, lease_gone (expired or revoked), max_hold, other.",
		}, with("cause")),
		leaseRemaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdlock_lease_remaining_seconds",
			Help: "Time that was left before the lease's conservative deadline when its last renewal was acknowledged.",
		}, kind),
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdlock_election_leader",
			Help: "Election terms this process leads now: 1 while it leads (per election with the name label).",
		}, elect),
		terms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdlock_election_terms_started_total",
			Help: "Election terms won by this process.",
		}, elect),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdlock_election_failovers_total",
			Help: "Election terms this process won after waiting behind another leader's term.",
		}, elect),
	}
	for _, c := range []prometheus.Collector{m.acquires, m.wait, m.holds, m.held, m.releases, m.losses, m.leaseRemaining, m.leader, m.terms, m.failovers} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if !o.name { // the election series exist, at 0, before the first term
		m.leader.WithLabelValues()
		m.terms.WithLabelValues()
		m.failovers.WithLabelValues()
	}
	return m, nil
}

// labels returns the label values of an event of kind and name.
func (m *Metrics) labels(kind, name string, extra ...string) []string {
	l := make([]string, 0, 3)
	l = append(l, kind)
	if m.name {
		l = append(l, name)
	}
	return append(l, extra...)
}

func (m *Metrics) electLabels(name string) []string {
	if m.name {
		return []string{name}
	}
	return nil
}

// Acquired implements metrics.Observer.
func (m *Metrics) Acquired(ev metrics.AcquireEvent) {
	m.acquires.WithLabelValues(m.labels(ev.Kind, ev.Name, string(ev.Result))...).Inc()
	if ev.Result != metrics.Granted {
		return
	}
	m.wait.WithLabelValues(m.labels(ev.Kind, ev.Name)...).Observe(ev.Wait.Seconds())
	m.holds.WithLabelValues(m.labels(ev.Kind, ev.Name)...).Inc()
	if ev.Kind == metrics.KindElection {
		l := m.electLabels(ev.Name)
		m.leader.WithLabelValues(l...).Inc()
		m.terms.WithLabelValues(l...).Inc()
		if ev.Waited {
			m.failovers.WithLabelValues(l...).Inc()
		}
	}
}

// Ended implements metrics.Observer.
func (m *Metrics) Ended(ev metrics.EndEvent) {
	l := m.labels(ev.Kind, ev.Name)
	m.holds.WithLabelValues(l...).Dec()
	m.held.WithLabelValues(l...).Observe(ev.Held.Seconds())
	if ev.Cause == metrics.Released {
		m.releases.WithLabelValues(l...).Inc()
	} else {
		m.losses.WithLabelValues(m.labels(ev.Kind, ev.Name, string(ev.Cause))...).Inc()
	}
	if ev.Kind == metrics.KindElection {
		m.leader.WithLabelValues(m.electLabels(ev.Name)...).Dec()
	}
}

// LeaseRenewed implements metrics.Observer.
func (m *Metrics) LeaseRenewed(ev metrics.RenewEvent) {
	m.leaseRemaining.WithLabelValues(m.labels(ev.Kind, ev.Name)...).Set(ev.Left.Seconds())
}

// Declare exports the series of the lock or election of kind and name at
// zero before its first event: a standby's etcdlock_election_leader 0, say.
// Without WithNameLabel, only the per-kind series are created.
func (m *Metrics) Declare(kind, name string) {
	l := m.labels(kind, name)
	m.holds.WithLabelValues(l...)
	m.releases.WithLabelValues(l...)
	m.acquires.WithLabelValues(m.labels(kind, name, string(metrics.Granted))...)
	if kind == metrics.KindElection {
		l := m.electLabels(name)
		m.leader.WithLabelValues(l...)
		m.terms.WithLabelValues(l...)
		m.failovers.WithLabelValues(l...)
	}
}
