//go:build unix

package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
)

// freeAddr returns a TCP address of 127.0.0.1 that was free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// probeClient keeps no idle connection, so that no goroutine outlives a
// request.
var probeClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get returns the status code and body of http://addr/path, or 0 and the
// error's text if the request failed (the server not up yet, say).
func get(addr, path string) (int, string) {
	resp, err := probeClient.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// waitProbe waits until addr's path answers code with a body holding
// text, failing the test after d.
func (e *e2eEnv) waitProbe(d time.Duration, addr, path string, code int, text string) {
	e.t.Helper()
	var got int
	var body string
	e.waitFor(d, path+" of "+addr, func() bool {
		got, body = get(addr, path)
		return got == code && strings.Contains(body, text)
	})
}

// wantProbe fails the test unless addr's path answers code now.
func wantProbe(t *testing.T, addr, path string, code int) {
	t.Helper()
	if got, body := get(addr, path); got != code {
		t.Errorf("%s of %s = %d %q, want %d", path, addr, got, body, code)
	}
}

// TestRunListenMetrics: run's /readyz is 200 while it holds the lock and
// 503 while it waits; once the hold is lost (its lease revoked) both
// /healthz and /readyz fail while CMD is being stopped, and /metrics
// counts the grant and the loss, with the name label.
func TestRunListenMetrics(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	addrA, addrB := freeAddr(t), freeAddr(t)
	// CMD ignores SIGTERM: it is killed after --grace, which keeps A
	// running, its hold lost, for the probes below.
	a := e.start("A", "run", "--ttl", "20s", "--grace", "3s", "--listen-metrics", addrA, "job", "--", "sh", "-c",
		`trap '' TERM; `+shStart+shForever)
	e.waitEvents(10*time.Second, "start", 1)
	e.waitProbe(10*time.Second, addrA, "/readyz", 200, "ok")
	wantProbe(t, addrA, "/healthz", 200)
	_, m := get(addrA, "/metrics")
	for _, want := range []string{
		`etcdlock_acquires_total{kind="mutex",name="job",result="granted"} 1`,
		`etcdlock_holds{kind="mutex",name="job"} 1`,
		`etcdlock_acquire_wait_seconds_count{kind="mutex",name="job"} 1`,
		"go_goroutines ", "process_start_time_seconds ",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}

	b := e.start("B", "run", "--listen-metrics", addrB, "job", "--", "sh", "-c", shStart+shEnd)
	e.waitKeys(10*time.Second, "mutex/", 2)
	e.waitProbe(10*time.Second, addrB, "/readyz", 503, `waiting for lock "job"`)
	wantProbe(t, addrB, "/healthz", 200)

	e.revoke(e.leaseOf("mutex/"))
	e.waitProbe(3*time.Second, addrA, "/healthz", 503, `lock "job" lost`)
	wantProbe(t, addrA, "/readyz", 503)
	e.waitProbe(3*time.Second, addrA, "/metrics", 200, `etcdlock_losses_total{cause="lease_gone",kind="mutex",name="job"} 1`)
	a.expect(exitLost, 10*time.Second)
	b.expect(0, 10*time.Second)
	if code, _ := get(addrA, "/healthz"); code != 0 {
		t.Errorf("A's server still answers after A exited: %d", code)
	}
	e.requireEmpty()
}

// TestElectListenMetrics: the leader's and the standby's /readyz are 200
// (both campaign, connected); the leader gauge is 1 on the leader and 0 on
// the standby. When the leader's lease is revoked its gauge drops to 0 and
// its /readyz fails until its CMD has stopped, while /healthz stays 200;
// the standby leads, counting a failover.
func TestElectListenMetrics(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := e.start("A", "elect", "--ttl", "20s", "--grace", "3s", "--listen-metrics", addrA, "el", "--", "sh", "-c",
		`trap '' TERM; `+shStart+shForever)
	e.waitEvents(10*time.Second, "start", 1)
	b := e.start("B", "elect", "--listen-metrics", addrB, "el", "--", "sh", "-c", shStart+shForever)
	e.waitKeys(10*time.Second, "election/", 2)
	e.waitProbe(10*time.Second, addrB, "/readyz", 200, "ok")
	e.waitProbe(10*time.Second, addrA, "/readyz", 200, "ok")
	wantProbe(t, addrA, "/healthz", 200)
	wantProbe(t, addrB, "/healthz", 200)
	e.waitProbe(5*time.Second, addrA, "/metrics", 200, `etcdlock_election_leader{name="el"} 1`)
	e.waitProbe(5*time.Second, addrB, "/metrics", 200, `etcdlock_election_leader{name="el"} 0`)

	e.revoke(e.leaseOf("election/"))
	e.waitProbe(3*time.Second, addrA, "/readyz", 503, `the term of election "el" ended`)
	wantProbe(t, addrA, "/healthz", 200) // CMD is killed at --grace, within the tolerance
	e.waitProbe(3*time.Second, addrA, "/metrics", 200, `etcdlock_election_leader{name="el"} 0`)
	e.waitEvents(10*time.Second, "start", 2) // B's CMD
	_, m := get(addrB, "/metrics")
	for _, want := range []string{
		`etcdlock_election_leader{name="el"} 1`,
		`etcdlock_election_failovers_total{name="el"} 1`,
		`etcdlock_election_terms_started_total{name="el"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("B's /metrics lacks %q:\n%s", want, m)
		}
	}
	_, m = get(addrA, "/metrics")
	if !strings.Contains(m, `etcdlock_losses_total{cause="lease_gone",kind="election",name="el"} 1`) {
		t.Errorf("A's /metrics lacks the loss:\n%s", m)
	}
	// A campaigns again, behind B, once its CMD has stopped.
	e.waitProbe(10*time.Second, addrA, "/readyz", 200, "ok")
	a.signal(syscall.SIGTERM)
	b.signal(syscall.SIGTERM)
	a.expect(128+int(syscall.SIGTERM), 10*time.Second)
	b.expect(128+int(syscall.SIGTERM), 10*time.Second)
	e.requireEmpty()
}

// TestListenMetricsBadAddr: an address that cannot be listened on fails
// the command before it connects, in one line.
func TestListenMetricsBadAddr(t *testing.T) {
	t.Parallel()
	needUnix(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, _, errOut := runCmd(t, 30*time.Second, "run", "--listen-metrics", ln.Addr().String(), "job", "--", "true")
	if code != exitRunFailure || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "--listen-metrics") {
		t.Errorf("exit %d, stderr %q; want %d and one line naming --listen-metrics", code, errOut, exitRunFailure)
	}
}

// TestElectHealthzTolerance: elect's /healthz check fails once a term has
// ended and CMD (as the probe server is told) still runs more than the
// tolerance later, and passes again once elect campaigns anew; /readyz
// fails from the end of the term.
func TestElectHealthzTolerance(t *testing.T) {
	srv := e2eServer(t)
	cli := srv.Client(t)
	ns := integration.Namespace(t)
	defer integration.RequireEmpty(t, cli, ns)
	el, err := election.New(cli, "hz", election.WithNamespace(ns), election.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer el.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &probeServer{cmd: "elect", tolerance: 100 * time.Millisecond}
	if err := s.ready(); err == nil {
		t.Error("ready before connecting")
	}
	s.connected(cli)
	s.holding(`election "hz"`, nil)
	if err := s.ready(); err != nil {
		t.Errorf("ready while campaigning: %v", err)
	}
	term, err := el.Campaign(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	s.holding(`election "hz"`, term)
	if err := errors.Join(s.healthy(), s.ready()); err != nil {
		t.Errorf("leading: %v", err)
	}
	ended := time.Now()
	if err := term.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.ready(); err == nil || !strings.Contains(err.Error(), "ended") {
		t.Errorf("ready after the term ended = %v, want the end", err)
	}
	// The tolerance is time: wait for it, bounded.
	for s.healthy() == nil {
		if time.Since(ended) > 5*time.Second {
			t.Fatal("healthy 5s after the term ended, with a tolerance of 100ms")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(ended); d < 100*time.Millisecond {
		t.Errorf("unhealthy %v after the term ended, within the tolerance", d)
	}
	if err := s.healthy(); !strings.Contains(err.Error(), "CMD still running") {
		t.Errorf("healthy = %v, want CMD still running", err)
	}
	s.holding(`election "hz"`, nil) // CMD stopped: campaigning again
	if err := errors.Join(s.healthy(), s.ready()); err != nil {
		t.Errorf("campaigning again: %v", err)
	}
}
