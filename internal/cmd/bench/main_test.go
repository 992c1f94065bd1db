package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// TestMain fails the package's tests if they leave goroutines behind.
func TestMain(m *testing.M) { integration.Main(m) }

// The exit statuses the tests expect.
const (
	exitOK          = cmdline.ExitOK
	exitUsage       = cmdline.ExitUsage
	exitUnreachable = cmdline.ExitUnreachable
)

// runCmd runs the bench with args in-process and returns its exit status,
// stdout and stderr.
func runCmd(t *testing.T, timeout time.Duration, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := benchCmd().Exec(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestUsage checks the exit statuses and help of the command line.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout, if not ""
	}{
		{[]string{"--help"}, exitOK, "--contenders"},
		{[]string{"--nope"}, exitUsage, ""},
		{[]string{"--contenders", "2,x"}, exitUsage, ""},
		{[]string{"--contenders", "2,2"}, exitUsage, ""},
		{[]string{"--duration", "0s"}, exitUsage, ""},
		{[]string{"--rounds", "0"}, exitUsage, ""},
		{[]string{"--only", "nope"}, exitUsage, ""},
		{[]string{"--only", ","}, exitUsage, ""},
	} {
		code, out, errOut := runCmd(t, time.Minute, tc.args...)
		if code != tc.code {
			t.Errorf("bench %q exited %d, want %d; stderr: %s", tc.args, code, tc.code, errOut)
		}
		if !strings.Contains(out, tc.out) {
			t.Errorf("bench %q: stdout lacks %q:\n%s", tc.args, tc.out, out)
		}
	}
}

// TestBenchJSON runs a short bench in-process and checks the shape of its
// JSON, never the speeds.
func TestBenchJSON(t *testing.T) {
	code, out, errOut := runCmd(t, 5*time.Minute, "--duration", "300ms", "--contenders", "2", "--json")
	if code != exitOK {
		t.Fatalf("bench exited %d, want 0; stderr:\n%s", code, errOut)
	}
	var rows []struct {
		Impl        string   `json:"impl"`
		Scenario    string   `json:"scenario"`
		Contenders  int      `json:"contenders"`
		OpsPerSec   float64  `json:"ops_per_sec"`
		P50Ms       *float64 `json:"p50_ms"`
		P99Ms       *float64 `json:"p99_ms"`
		ByContender []int    `json:"ops_by_contender"`
		CPUCores    *float64 `json:"cpu_cores"`
		CPUPerOpUs  *float64 `json:"cpu_us_per_op"`
		PerPut      *float64 `json:"per_put"`
		PerFloor    *float64 `json:"per_floor"`
		Fsyncs      *float64 `json:"wal_fsyncs_per_op"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("stdout is not one JSON array: %v\n%s", err, out)
	}
	type key struct {
		impl, scenario string
		contenders     int
	}
	got := make(map[key]bool)
	for _, r := range rows {
		if r.OpsPerSec <= 0 || r.P50Ms == nil || r.P99Ms == nil {
			t.Errorf("row %+v: want positive ops_per_sec and p50_ms, p99_ms present", r)
		}
		// Every cell does work in this process: its CPU is above zero
		// (where the platform tells it).
		if _, ok := processCPU(); ok && (r.CPUCores == nil || *r.CPUCores <= 0 || r.CPUPerOpUs == nil || *r.CPUPerOpUs <= 0) {
			t.Errorf("row %s %s %d: want positive cpu_cores and cpu_us_per_op", r.Impl, r.Scenario, r.Contenders)
		}
		got[key{r.Impl, r.Scenario, r.Contenders}] = true
		// The contended mutex rows are compared with their serial Put and
		// their floor; the embedded server's fsyncs are counted (at least
		// one per critical section: its writes wait for the one before).
		if r.Scenario == "contended" && r.Contenders == 2 && r.Impl != "etcdlock-sem" {
			if r.PerPut == nil || (r.Impl != "floor") != (r.PerFloor != nil) {
				t.Errorf("row %s %s %d: per_put %v, per_floor %v; want per_put, and per_floor but on the floor row", r.Impl, r.Scenario, r.Contenders, r.PerPut, r.PerFloor)
			}
			if r.Fsyncs == nil || *r.Fsyncs < 1 {
				t.Errorf("row %s %s %d: wal_fsyncs_per_op %v, want at least 1", r.Impl, r.Scenario, r.Contenders, r.Fsyncs)
			}
		}
		// The semaphore and readers rows are compared with their floor.
		if (r.Impl == "etcdlock-sem" || r.Impl == "etcdlock-rw" && r.Scenario == "readers") && r.PerFloor == nil {
			t.Errorf("row %s %s %d: no per_floor", r.Impl, r.Scenario, r.Contenders)
		}
		if r.Impl == "etcdlock-rw" && r.Scenario == "readers" {
			// Writer-fair: the writer, last, is never starved by the readers.
			if len(r.ByContender) != 9 || r.ByContender[8] == 0 {
				t.Errorf("readers row: ops by contender %v, want 9 counts, the writer's (last) not 0", r.ByContender)
			}
		}
	}
	for _, want := range []key{
		{"put", "put", 1},
		{"etcdlock", "uncontended", 1},
		{"concurrency", "uncontended", 1},
		{"txn", "uncontended", 1},
		{"etcdlock", "contended", 2},
		{"concurrency", "contended", 2},
		{"floor", "contended", 2},
		{"floor-noread", "contended", 2},
		{"put", "serial", 2},
		{"etcdlock", "contended", 9},
		{"etcdlock", "contended", 16},
		{"etcdlock-rw", "readers", 9},
		{"etcdlock-rw", "writers", 8},
		{"recipes-rw", "writers", 8},
		{"etcdlock-sem", "contended", 16},
		{"floor-sem", "contended", 16},
		{"floor-sem-noread", "contended", 16},
		{"floor-rw", "readers", 9},
		{"floor-rw-noread", "readers", 9},
		{"put", "parallel", 9},
		{"put", "parallel", 16},
		{"etcdlock-election", "handoff", 2},
		{"concurrency-election", "handoff", 2},
	} {
		if !got[want] {
			t.Errorf("no row for %+v in %s", want, out)
		}
	}
}

// TestPercentileMedian checks the bench's statistics.
func TestPercentileMedian(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	if got := percentile(ds, 50); got != 5 {
		t.Errorf("p50 = %v, want 5", got)
	}
	if got := percentile(ds, 99); got != 10 {
		t.Errorf("p99 = %v, want 10", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none = %v, want 0", got)
	}
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median = %v, want 2", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
}

// TestBenchOnly checks that --only keeps the groups measuring the named
// implementations, with the rows their ratios need.
func TestBenchOnly(t *testing.T) {
	plan := selectGroups(benchPlan(benchConfig{contenders: []int{2}}), []string{"etcdlock-sem"})
	var got []cellKey
	for _, g := range plan {
		for _, c := range g.cells {
			got = append(got, c.key())
		}
	}
	want := []cellKey{{"etcdlock-sem", "contended", 16}, {"etcdlock", "contended", 16}, {"put", "parallel", 16},
		{"floor-sem", "contended", 16}, {"floor-sem-noread", "contended", 16}}
	if !slices.Equal(got, want) {
		t.Errorf("--only etcdlock-sem runs %v, want %v", got, want)
	}
	// The floor rows are compared with the serial Put of their group.
	plan = selectGroups(benchPlan(benchConfig{contenders: []int{2}}), []string{"floor"})
	got = nil
	for _, g := range plan {
		for _, c := range g.cells {
			got = append(got, c.key())
		}
	}
	want = []cellKey{{"put", "serial", 2}, {"etcdlock", "contended", 2}, {"concurrency", "contended", 2}, {"floor", "contended", 2}, {"floor-noread", "contended", 2}}
	if !slices.Equal(got, want) {
		t.Errorf("--only floor runs %v, want %v", got, want)
	}
}

// TestBenchEndpoints runs a short bench against an etcd of its own given
// with --endpoints: the rows say so and carry no fsync, the cells wrote
// under --namespace, and they left nothing there.
func TestBenchEndpoints(t *testing.T) {
	srv := integration.NewServer(t, integration.WithClientURL("http://127.0.0.1:0"), integration.WithoutFsync())
	cli, err := srv.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ns := integration.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := cli.Get(ctx, ns, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, 2*time.Minute, "--endpoints", srv.Endpoint(), "--namespace", ns,
		"--only", "txn", "--contenders", "", "--duration", "200ms", "--json")
	if code != exitOK {
		t.Fatalf("bench exited %d, want 0; stderr:\n%s", code, errOut)
	}
	var rows []struct {
		Impl   string          `json:"impl"`
		Ops    int             `json:"ops"`
		Ratio  *float64        `json:"ratio"`
		Server string          `json:"server"`
		Fsync  json.RawMessage `json:"fsync"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("stdout is not one JSON array: %v\n%s", err, out)
	}
	impls, writes := map[string]bool{}, int64(0)
	for _, r := range rows {
		impls[r.Impl] = true
		if r.Server != "external" || r.Fsync != nil {
			t.Errorf("row %s: server %q, fsync %s; want external and no fsync", r.Impl, r.Server, r.Fsync)
		}
		if r.Impl != "put" && r.Ratio == nil {
			t.Errorf("row %s: no ratio to the puts", r.Impl)
		}
		writes += int64(r.Ops) // each operation writes once or more
	}
	for _, want := range []string{"put", "etcdlock", "concurrency", "txn"} {
		if !impls[want] {
			t.Errorf("no %s row in %s", want, out)
		}
	}
	// The cells' writes went to this server, under ns: its history there
	// holds at least one put per operation. And none of their keys is
	// left.
	// A put of our own after the bench marks where its history ends.
	end, err := cli.Put(ctx, ns+"end", "")
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	var puts int64
	for wr := range cli.Watch(wctx, ns, clientv3.WithPrefix(), clientv3.WithRev(before.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			t.Fatalf("watching %s from revision %d: %v", ns, before.Header.Revision+1, err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut && ev.Kv.ModRevision < end.Header.Revision {
				puts++
			}
		}
		if n := len(wr.Events); n > 0 && wr.Events[n-1].Kv.ModRevision >= end.Header.Revision {
			break
		}
	}
	if _, err := cli.Delete(ctx, ns+"end"); err != nil {
		t.Fatal(err)
	}
	if puts < writes {
		t.Errorf("%d puts under %s over the bench, want at least %d (its operations)", puts, ns, writes)
	}
	integration.RequireEmpty(t, cli, ns)
}

// TestBenchEndpointsUsage checks bench's refusals of bad connection flags:
// a usage error for --fsync with --endpoints, an empty list, or a
// connection flag without --endpoints, and etcdlock's status for an etcd it
// cannot reach.
func TestBenchEndpointsUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--endpoints", "127.0.0.1:1", "--fsync=false"}, exitUsage},
		{[]string{"--endpoints", " , "}, exitUsage},
		{[]string{"--endpoints", ""}, exitUsage}, // not the default endpoint
		{[]string{"--namespace", "x/"}, exitUsage},
		{[]string{"--user", "bob"}, exitUsage},
		{[]string{"--dial-timeout", "1s"}, exitUsage},
		{[]string{"--endpoints", "127.0.0.1:1", "--dial-timeout", "300ms"}, exitUnreachable},
	} {
		code, _, errOut := runCmd(t, time.Minute, append([]string{"--contenders", ""}, tc.args...)...)
		if code != tc.code {
			t.Errorf("bench %q exited %d, want %d; stderr: %s", tc.args, code, tc.code, errOut)
		}
	}
}

// TestBareTxnLeaseOutlivesGroup: the bare txn row's lease is not kept
// alive, so it must last past the end of the interleaved group (which,
// with 4 cells of 3 s, is longer than benchTTL; the default bench once
// failed with "requested lease not found").
func TestBareTxnLeaseOutlivesGroup(t *testing.T) {
	group := 4*3*time.Second + cellSlack
	ctx, cancel := context.WithTimeout(context.Background(), group)
	defer cancel()
	if ttl := time.Duration(bareTxnTTL(ctx)) * time.Second; ttl < group {
		t.Errorf("bare txn lease TTL %v, want at least the group's %v", ttl, group)
	}
	if ttl := bareTxnTTL(context.Background()); ttl < benchTTL {
		t.Errorf("bare txn lease TTL %ds without a deadline, want at least %d", ttl, benchTTL)
	}
}
