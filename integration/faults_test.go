package integration_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
)

func TestFaultsOnCluster(t *testing.T) {
	c := integration.NewCluster(t, 3, integration.WithoutFsync())
	f, err := integration.NewFaults(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Faults.Close: %v", err)
		}
	})
	cli := c.Client(t)
	ctx := ctxT(t, 60*time.Second)
	putRetry(t, cli, "k", "v0")

	// Restart the leader: another member leads meanwhile, and the old one
	// is back and serving when RestartLeader returns.
	lead, err := f.RestartLeader(ctx, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("RestartLeader: %v", err)
	}
	if !c.Member(lead).Running() {
		t.Fatalf("member %d not running after RestartLeader", lead)
	}
	putRetry(t, cli, "k", "v1")

	// MoveLeader goes to the next member.
	from, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	to, err := f.MoveLeader(ctx)
	if err != nil || to != (from+1)%3 {
		t.Fatalf("MoveLeader from %d = %d, %v; want %d", from, to, err, (from+1)%3)
	}

	// Partition the leader: a new leader is elected while it lasts, and the
	// old one is healed afterwards (it can lead again). The partition lasts
	// 4 s, room for an election on a loaded machine (a partition of 1.5 s
	// once ended before one).
	const partition = 4 * time.Second
	var wg sync.WaitGroup
	var part int
	var perr error
	wg.Go(func() { part, perr = f.PartitionLeader(ctx, partition) })
	time.Sleep(100 * time.Millisecond)
	deadline := time.Now().Add(partition - 200*time.Millisecond)
	for {
		l, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l != to {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leader %d still leads while partitioned", to)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	if perr != nil || part != to {
		t.Fatalf("PartitionLeader = %d, %v; want %d", part, perr, to)
	}
	if err := c.MoveLeader(ctx, part); err != nil {
		t.Fatalf("healed member cannot lead: %v", err)
	}

	// PauseMember of the leader: it loses leadership, then rejoins.
	lead, err = c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.PauseMember(ctx, lead, time.Second); err != nil {
		t.Fatalf("PauseMember: %v", err)
	}
	putRetry(t, cli, "k", "v2")
	if err := c.MoveLeader(ctx, lead); err != nil {
		t.Fatalf("resumed member cannot lead: %v", err)
	}

	// Compact and Compactor: old revisions are gone, and the floor holds.
	resp, err := cli.Put(ctx, "k", "v3")
	if err != nil {
		t.Fatal(err)
	}
	old := resp.Header.Revision
	putRetry(t, cli, "k", "v4")
	rev, err := f.Compact(ctx, old)
	if err != nil || rev != old {
		t.Fatalf("Compact(floor %d) = %d, %v", old, rev, err)
	}
	if _, err := cli.Get(ctx, "k", clientv3.WithRev(old-1)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("Get below the compaction: %v, want ErrCompacted", err)
	}
	if _, err := cli.Get(ctx, "k", clientv3.WithRev(old)); err != nil {
		t.Fatalf("Get at the compaction floor: %v", err)
	}
	// A second of 100 ms periods: room for the first compaction on a
	// loaded machine; the floor allows no other.
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	n, err := f.Compactor(cctx, 100*time.Millisecond, func() int64 { return old + 1 })
	cancel()
	if n != 1 || err != nil { // the floor only allows one new compaction
		t.Fatalf("Compactor = %d, %v; want 1 compaction", n, err)
	}
}

// TestFaultEndsWithContext checks that a fault whose context ends early is
// undone at once.
func TestFaultEndsWithContext(t *testing.T) {
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)
	ns := integration.Namespace(t)
	mustPut(t, cli, ns+"k", "v")

	// A pause of ten minutes, whose context ends after 200 ms: the test's
	// own timeout catches a PauseClient that sleeps its whole term.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := integration.PauseClient(ctx, 10*time.Minute, p)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PauseClient with an ending context = %v, want context.DeadlineExceeded", err)
	}
	mustGet(t, cli, ns+"k") // unpaused
	if _, err := cli.Delete(ctxT(t, 5*time.Second), ns+"k"); err != nil {
		t.Fatal(err)
	}
	integration.RequireEmpty(t, cli, ns)
}

func TestClientFaults(t *testing.T) {
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)
	ns := integration.Namespace(t)
	mustPut(t, cli, ns+"k", "v")
	ctx := ctxT(t, 30*time.Second)

	// blocks runs fault on its own goroutine until the test cancels it, and
	// reports whether a Get failed while it lasted: the fault takes effect
	// when its goroutine runs, so Gets are tried until one fails or the
	// fault's goroutine has surely run. Each Get has 2 s, which only a
	// fault, not a busy server, makes it miss.
	blocks := func(name string, fault func(context.Context, time.Duration, ...*integration.Proxy) error) bool {
		t.Helper()
		fctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var ferr error
		wg.Go(func() { ferr = fault(fctx, 10*time.Minute, p) })
		failed := false
		for range 20 {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := cli.Get(gctx, ns+"k")
			cancel()
			if err != nil {
				failed = true
				break
			}
		}
		stop()
		wg.Wait()
		if !errors.Is(ferr, context.Canceled) {
			t.Fatalf("%s cancelled: %v, want context.Canceled", name, ferr)
		}
		return failed
	}
	if !blocks("PauseClient", integration.PauseClient) {
		t.Fatal("every Get through a paused client succeeded")
	}
	mustGet(t, cli, ns+"k")
	if !blocks("BlackholeClient", integration.BlackholeClient) {
		t.Fatal("every Get through a blackholed client succeeded")
	}
	getRetry(t, cli, ns+"k") // the connection may need to be re-established

	// Responses are late by the latency; requests still arrive at once. The
	// delay takes effect when its goroutine runs: Puts are made until one is
	// answered late, which must happen before the delay ends.
	var wg sync.WaitGroup
	dctx, stopDelay := context.WithCancel(ctx)
	wg.Go(func() {
		if err := integration.DelayClientResponses(dctx, 10*time.Minute, 400*time.Millisecond, p); !errors.Is(err, context.Canceled) {
			t.Errorf("DelayClientResponses cancelled: %v, want context.Canceled", err)
		}
	})
	late := false
	for i := 0; i < 20 && !late; i++ {
		start := time.Now()
		if _, err := cli.Put(ctx, ns+"k", "delayed"); err != nil {
			t.Fatal(err)
		}
		late = time.Since(start) >= 400*time.Millisecond
	}
	stopDelay()
	wg.Wait()
	if !late {
		t.Error("no Put was answered 400ms late through a 400ms response delay")
	}
	if got := mustGet(t, cli, ns+"k"); got != "delayed" {
		t.Fatalf("k = %q", got)
	}

	// Dropped requests never reach the server. As above, Puts are made
	// until one fails (in 2 s); its value must never land.
	direct := srv.Client(t)
	pctx0, stopDrop := context.WithCancel(ctx)
	wg.Go(func() {
		if err := integration.DropClientRequests(pctx0, 10*time.Minute, p); !errors.Is(err, context.Canceled) {
			t.Errorf("DropClientRequests cancelled: %v, want context.Canceled", err)
		}
	})
	dropped := ""
	for i := range 20 {
		v := fmt.Sprintf("try-%d", i)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Put(pctx, ns+"k", v)
		cancel()
		if err != nil {
			dropped = v
			break
		}
	}
	stopDrop()
	wg.Wait()
	if dropped == "" {
		t.Fatal("every Put through dropped requests succeeded")
	}
	if got := mustGet(t, direct, ns+"k"); got == dropped {
		t.Fatalf("k = %q: the dropped Put landed", got)
	}
	if _, err := direct.Delete(ctx, ns+"k"); err != nil {
		t.Fatal(err)
	}
	integration.RequireEmpty(t, direct, ns)
}

func getRetry(t *testing.T, cli *clientv3.Client, k string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, k)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("get %q: %v", k, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestScheduleReplaysFromSeed(t *testing.T) {
	run := func(seed uint64) []integration.FaultRecord {
		var faults []integration.Fault
		for _, name := range []string{"a", "b", "c"} {
			faults = append(faults, integration.Fault{Name: name, Inject: func(ctx context.Context, rng *rand.Rand) (string, error) {
				return fmt.Sprint(rng.IntN(1000)), nil
			}})
		}
		var log integration.FaultLog
		s := integration.Schedule{Seed: seed, Faults: faults, MinGap: time.Millisecond, MaxGap: 2 * time.Millisecond, Log: &log}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		recs := s.Run(ctx)
		if got := log.Records(); len(got) != len(recs) {
			t.Fatalf("log has %d records, Run returned %d", len(got), len(recs))
		}
		return recs
	}
	a, b, c := run(7), run(7), run(8)
	if len(a) < 5 || len(b) < 5 {
		t.Fatalf("only %d and %d faults in 100ms", len(a), len(b))
	}
	same := func(x, y []integration.FaultRecord) bool {
		for i := range min(len(x), len(y)) {
			if x[i].Name != y[i].Name || x[i].Target != y[i].Target {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Fatalf("same seed, different schedules:\n%v\n%v", a, b)
	}
	if same(a, c) {
		t.Fatalf("different seeds, same schedule:\n%v\n%v", a, c)
	}
}

// A fault on member i that ends while member j is partitioned leaves j's
// cuts in place, i<->j included: once the third member is stopped, i and
// j (a majority of three) must not elect a leader until j's partition
// heals.
func TestFaultKeepsOtherPartition(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(ctx context.Context, f *integration.Faults, i int) error
	}{
		{"restart", func(ctx context.Context, f *integration.Faults, i int) error {
			return f.RestartMember(ctx, i, 100*time.Millisecond)
		}},
		{"partition", func(ctx context.Context, f *integration.Faults, i int) error {
			return f.PartitionMember(ctx, i, 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := integration.NewCluster(t, 3, integration.WithoutFsync())
			f, err := integration.NewFaults(c, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = f.Close() })
			ctx := ctxT(t, 60*time.Second)
			k, err := c.WaitLeader(ctx)
			if err != nil {
				t.Fatal(err)
			}
			j, i := (k+1)%3, (k+2)%3
			c.Isolate(j)
			if err := tc.fault(ctx, f, i); err != nil {
				t.Fatalf("%s of member %d: %v", tc.name, i, err)
			}
			if err := c.Member(k).HardStop(); err != nil {
				t.Fatal(err)
			}
			// Election timeouts are 100 ms: a healed i<->j elects within a
			// few of them.
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			l, err := c.WaitLeader(wctx)
			cancel()
			if err == nil {
				t.Fatalf("member %d leads after the %s of member %d while member %d is partitioned", l, tc.name, i, j)
			}
			c.Heal(j)
			if _, err := c.WaitLeader(ctx); err != nil {
				t.Fatalf("members %d and %d elect no leader once %d's partition heals: %v", i, j, j, err)
			}
		})
	}
}

// A PauseMember that starts and ends while another pause of the same
// member lasts leaves that member paused: it serves no linearizable read
// until the outer pause ends.
func TestPauseMemberNests(t *testing.T) {
	c := integration.NewCluster(t, 3, integration.WithoutFsync())
	f, err := integration.NewFaults(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	ctx := ctxT(t, 60*time.Second)
	k, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cli := c.Member(k).Client(t)
	mustPut(t, cli, "k", "v")

	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := f.PauseMember(pctx, k, 10*time.Minute); !errors.Is(err, context.Canceled) {
			t.Errorf("PauseMember cancelled: %v, want context.Canceled", err)
		}
	})
	defer wg.Wait()
	defer stop()
	// The pause is in effect once the others elected another leader.
	for {
		l, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l != k {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := f.PauseMember(ctx, k, 0); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = cli.Get(rctx, "k")
	cancel()
	if err == nil {
		t.Fatalf("member %d served a linearizable read after a nested pause ended, its outer pause still in effect", k)
	}
	stop()
	wg.Wait()
	getRetry(t, cli, "k")
}

// A fault that has not returned after StuckAfter ends its schedule: Run
// calls OnStuck and returns with the fault's record marked stuck, without
// waiting for it and without starting another fault.
func TestScheduleGivesUpOnStuckFault(t *testing.T) {
	release, exited := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	var stuck []integration.FaultRecord
	s := &integration.Schedule{
		Seed: 1, MinGap: time.Millisecond, MaxGap: time.Millisecond, StuckAfter: 200 * time.Millisecond,
		Faults: []integration.Fault{{Name: "hang", Inject: func(ctx context.Context, _ *rand.Rand) (string, error) {
			if calls.Add(1) == 1 {
				return "quick", nil
			}
			defer close(exited)
			<-release
			return "late", nil
		}}},
		OnStuck: func(r integration.FaultRecord) { stuck = append(stuck, r) },
	}
	recs := s.Run(ctxT(t, time.Minute)) // the context outlives the test's checks
	close(release)
	<-exited
	if len(recs) != 2 || recs[0].Stuck || recs[0].Target != "quick" || !recs[1].Stuck || recs[1].Name != "hang" ||
		!strings.Contains(recs[1].Err, "stuck") {
		t.Fatalf("records %+v, want a quick fault, then a stuck one", recs)
	}
	if len(stuck) != 1 || stuck[0] != recs[1] {
		t.Errorf("OnStuck got %+v, want the stuck record once", stuck)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d faults started, want none after the stuck one", n)
	}
}
