package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/lock"
	"github.com/etcdlock/etcdlock/metrics"
	"github.com/etcdlock/etcdlock/metrics/prommetrics"
)

// listenHelp is the help of --listen-metrics, for run and elect.
const listenHelp = `
With --listen-metrics ADDR (host:port, e.g. :9090 or 127.0.0.1:9090) an HTTP
server on ADDR serves, until etcdlock exits:

	/metrics  Prometheus metrics: the lock's or election's (etcdlock_*, see
	          package prommetrics; labelled with kind and name), Go's and
	          the process's
	/healthz  200 unless the process needs restarting (see below), else 503
	/readyz   200 when ready (see below), else 503

The body of /healthz and /readyz says why, in one line.
`

// runListenHelp is run's --listen-metrics help.
const runListenHelp = listenHelp + `
For run, /healthz fails (503) once the hold is lost, while CMD is being
stopped; /readyz succeeds (200) only while the lock is held: it fails
while connecting to etcd, while waiting for the lock, and once the hold
ended.
`

// electListenHelp is elect's --listen-metrics help.
const electListenHelp = listenHelp + `
For elect, /healthz fails (503) when CMD still runs more than --grace plus
1s after its term ended, or when the current term is more than that past
its lease deadline without having been found lost (the process was
paused); /readyz succeeds (200) while the candidate campaigns or leads and
its connection to etcd is up: it fails while connecting, when the
connection is down, and after a term was lost until CMD has stopped. A
probe that must find the leader reads etcdlock_election_leader in /metrics.
`

// metricsFlags is the --listen-metrics flag of run and elect, and the
// server it starts.
type metricsFlags struct {
	addr string
	srv  *probeServer // nil without --listen-metrics
}

// Register defines --listen-metrics on fs.
func (f *metricsFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "listen-metrics", "", "serve /metrics, /healthz and /readyz over HTTP on `ADDR` (host:port)")
}

// lockOptions returns the options that report the metrics of the lock of
// kind and name to the server, if any.
func (f *metricsFlags) lockOptions(kind lock.Kind, name string) []lock.Option {
	if f.srv == nil {
		return nil
	}
	f.srv.obs.Declare(string(kind), name)
	return []lock.Option{lock.WithMetrics(f.srv.obs)}
}

// electionOptions is lockOptions for the election name.
func (f *metricsFlags) electionOptions(name string) []election.Option {
	if f.srv == nil {
		return nil
	}
	f.srv.obs.Declare(metrics.KindElection, name)
	return []election.Option{election.WithMetrics(f.srv.obs)}
}

// start starts the server, if --listen-metrics was given, for the command
// cmd ("run" or "elect"), whose /healthz allows tolerance (see probeServer).
// stop stops it; it does nothing without the flag.
func (f *metricsFlags) start(cmd string, tolerance time.Duration) (stop func(), err error) {
	if f.addr == "" {
		return func() {}, nil
	}
	reg := prometheus.NewRegistry()
	// One NAME per process: the name label adds no series.
	obs, err := prommetrics.New(reg, prommetrics.WithNameLabel())
	if err != nil {
		return nil, err
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return nil, fmt.Errorf("--listen-metrics: %w", err)
	}
	s := &probeServer{cmd: cmd, obs: obs, tolerance: tolerance, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", s.probe(s.healthy))
	mux.HandleFunc("/readyz", s.probe(s.ready))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(ln) // ErrServerClosed at stop
	}()
	f.srv = s
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if s.http.Shutdown(ctx) != nil {
			_ = s.http.Close()
		}
		<-s.done
	}, nil
}

// probeServer serves run's and elect's probes:
//
//	run:   /healthz fails once the hold is lost (CMD is being stopped);
//	       /readyz succeeds while the lock is held, and fails while
//	       connecting, waiting, and after the hold ended.
//	elect: /healthz fails when CMD still runs more than tolerance (--grace
//	       plus 1s) after its term ended, or when the term's lease deadline
//	       passed more than tolerance ago without the term being found lost
//	       (the process was paused); /readyz succeeds while the candidate
//	       campaigns or leads and its etcd connection is up, and fails while
//	       connecting, and after a term was lost until CMD has stopped.
//
// It is safe for concurrent use.
type probeServer struct {
	cmd       string
	obs       *prommetrics.Metrics
	tolerance time.Duration
	http      *http.Server
	done      chan struct{} // closed when Serve returned

	mu     sync.Mutex
	cli    *clientv3.Client
	what   string  // what is held or led, for messages
	hold   holding // the hold or term, once granted; nil before
	endAt  time.Time
	stopAf func() bool // stops the AfterFunc that sets endAt
}

// probe serves check's verdict: 200 "ok", or 503 and why.
func (s *probeServer) probe(check func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "etcdlock %s: %v\n", s.cmd, err)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}

// connected notes the client, once connected to etcd.
func (s *probeServer) connected(cli *clientv3.Client) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.cli = cli
	s.mu.Unlock()
}

// holding notes h, a hold or term of what, granted now; nil: campaigning
// (again).
func (s *probeServer) holding(what string, h interface {
	holding
	Context() context.Context
}) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopAf != nil {
		s.stopAf()
		s.stopAf = nil
	}
	s.what, s.hold, s.endAt = what, nil, time.Time{}
	if h == nil {
		return
	}
	s.hold = h
	s.stopAf = context.AfterFunc(h.Context(), func() {
		s.mu.Lock()
		if s.hold == holding(h) {
			s.endAt = time.Now()
		}
		s.mu.Unlock()
	})
}

// state returns what the probes judge.
func (s *probeServer) state() (cli *clientv3.Client, what string, h holding, endAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cli, s.what, s.hold, s.endAt
}

// healthy is /healthz's check.
func (s *probeServer) healthy() error {
	_, what, h, endAt := s.state()
	if h == nil {
		return nil
	}
	err := h.Err()
	if s.cmd == "run" {
		if errors.Is(err, lock.ErrLost) {
			return fmt.Errorf("%s lost (%s)", what, lossReason(err))
		}
		return nil
	}
	now := time.Now()
	switch {
	case err != nil && !endAt.IsZero() && now.Sub(endAt) > s.tolerance:
		return fmt.Errorf("CMD still running %v after the term of %s ended (%s)", now.Sub(endAt).Round(time.Millisecond), what, lossReason(err))
	case err == nil:
		if d, ok := h.(interface{ Deadline() time.Time }); ok && now.Sub(d.Deadline()) > s.tolerance {
			return fmt.Errorf("the term of %s is past its lease deadline by %v", what, now.Sub(d.Deadline()).Round(time.Millisecond))
		}
	}
	return nil
}

// ready is /readyz's check.
func (s *probeServer) ready() error {
	cli, what, h, _ := s.state()
	if s.cmd == "run" {
		switch {
		case cli == nil:
			return errors.New("connecting to etcd")
		case h == nil:
			return fmt.Errorf("waiting for %s", what)
		case h.Err() != nil:
			return fmt.Errorf("%s ended (%s)", what, lossReason(h.Err()))
		}
		return nil
	}
	switch {
	case cli == nil:
		return errors.New("connecting to etcd")
	case h != nil && h.Err() != nil:
		return fmt.Errorf("the term of %s ended (%s); stopping CMD", what, lossReason(h.Err()))
	}
	if st := cli.ActiveConnection().GetState(); st != connectivity.Ready && st != connectivity.Idle {
		return fmt.Errorf("etcd connection %s", st)
	}
	return nil
}
