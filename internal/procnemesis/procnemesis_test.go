package procnemesis

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/etcdlock/etcdlock/internal/nemesis"
	"github.com/etcdlock/etcdlock/internal/procnemesis/record"
)

var (
	seed     = flag.Int64("procnemesis.seed", 0, "seed to replay (0: a new one)")
	duration = flag.Duration("procnemesis.duration", 0, "time under faults (0: 75s, 30s with -short)")
	keep     = flag.String("procnemesis.dir", "", "keep the run's binaries, data and histories in this directory")
	verbose  = flag.Bool("procnemesis.v", false, "log every fault")
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestShortTier runs the suite for about two minutes (one with -short):
// three etcd processes with fsync on, worker and `etcdlock run` holder
// processes, every fault kind. It requires a valid run with no violation,
// frozen holders whose late writes the fences all refused, lost updates
// in the unfenced control (proof that the freezes outlived the leases),
// killed etcdlock runs whose children died with them, and no process left.
func TestShortTier(t *testing.T) {
	d := *duration
	if d == 0 {
		d = 75 * time.Second
		if testing.Short() {
			d = 30 * time.Second
		}
	}
	cfg := Config{Duration: d, Seed: *seed, Dir: *keep}
	if *verbose {
		cfg.Log = tlog{t}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = rep.Table(&b)
	t.Logf("\n%s", b.String())
	if out := os.Getenv("PROCNEMESIS_JSON"); out != "" {
		j, _ := json.MarshalIndent(rep, "", "  ")
		_ = os.WriteFile(out, j, 0o644)
	}
	if !rep.Valid {
		t.Errorf("run not valid: %v", rep.InvalidReasons)
	}
	if rep.Violations != 0 {
		t.Errorf("%d violations (seed %d)", rep.Violations, rep.Seed)
	}
	if rep.FrozenPastTTL == 0 || rep.FrozenAllRefused == 0 || rep.FrozenLateAccepted != 0 {
		t.Errorf("frozen holders: %d past their TTL, %d with every late write refused, %d late writes accepted; want some refused, none accepted",
			rep.FrozenPastTTL, rep.FrozenAllRefused, rep.FrozenLateAccepted)
	}
	if rep.ControlLostUpdates == 0 {
		t.Errorf("the unfenced control lost no update: the freezes did not outlive the leases")
	}
	if rep.RunsKilled == 0 || rep.RunChildrenOutlived != 0 {
		t.Errorf("%d etcdlock runs killed, %d outlived by their children", rep.RunsKilled, rep.RunChildrenOutlived)
	}
	if len(rep.Leftovers) != 0 {
		t.Errorf("processes left: %v", rep.Leftovers)
	}
}

type tlog struct{ t *testing.T }

func (l tlog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestPeerProxyCuts: the proxy relays a request that names its sender,
// refuses it once that sender is cut (closing the open connection), and
// lets other senders and requests without a sender through, until the
// member is cut from all.
func TestPeerProxyCuts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() { // an echo server of lines
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	p, err := startPeerProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	dial := func(from string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.addr())
		if err != nil {
			t.Fatal(err)
		}
		head := "GET /raft/stream/message/1 HTTP/1.1\r\nHost: x\r\n"
		if from != "" {
			head += "X-Server-From: " + from + "\r\n"
		}
		if _, err := c.Write([]byte(head + "\r\n")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	// The echo server sends the head back line by line: a relayed
	// connection answers with its request line.
	relayed := func(br *bufio.Reader) bool {
		line, err := br.ReadString('\n')
		return err == nil && strings.HasPrefix(line, "GET ")
	}
	a, abr := dial("aa")
	defer a.Close()
	if !relayed(abr) {
		t.Fatal("a request from aa was not relayed")
	}
	p.setCut([]string{"aa"}, false)
	if _, err := abr.ReadString(0); err == nil {
		t.Error("aa's open connection survived the cut")
	}
	a2, a2br := dial("aa")
	defer a2.Close()
	if relayed(a2br) {
		t.Error("a new request from aa was relayed while cut")
	}
	b, bbr := dial("bb")
	defer b.Close()
	n, nbr := dial("")
	defer n.Close()
	if !relayed(bbr) || !relayed(nbr) {
		t.Error("a request from bb, or naming no sender, was not relayed while only aa is cut")
	}
	p.setCut(nil, false)
	a3, a3br := dial("aa")
	defer a3.Close()
	if !relayed(a3br) {
		t.Error("a request from aa was not relayed once mended")
	}
	p.setCut(nil, true) // cut from every member: nothing gets through
	n2, n2br := dial("")
	defer n2.Close()
	if relayed(n2br) {
		t.Error("a request naming no sender was relayed to a member cut from all")
	}
	for _, c := range []net.Conn{a, a2, a3, b, n, n2} {
		c.Close()
	}
	p.close()
	ln.Close()
	<-done
}

// TestLeftovers: the /proc scan finds a live process naming the directory,
// and not one that has exited.
func TestLeftovers(t *testing.T) {
	dir := t.TempDir()
	ps := newProcs()
	p, err := ps.start("sleeper", nil, filepath.Join(dir, "log"), "/bin/sh", "-c", "sleep 60; : "+dir)
	if err != nil {
		t.Fatal(err)
	}
	if left := leftovers(dir); len(left) != 1 || !strings.Contains(left[0], dir) {
		t.Errorf("leftovers = %q, want the sleeper", left)
	}
	if !alive(p.pid()) {
		t.Error("the sleeper is not alive")
	}
	ps.closeAll()
	if left := leftovers(dir); len(left) != 0 {
		t.Errorf("leftovers after closeAll = %q", left)
	}
	if alive(p.pid()) {
		t.Error("the sleeper is alive after closeAll")
	}
}

// TestKillRunOutlived: the check of a killed etcdlock run's children fails
// for a "run" that leaves its child behind (a shell whose background job
// has no parent-death signal), and the child is killed anyway.
func TestKillRunOutlived(t *testing.T) {
	dir := t.TempDir()
	s := &suite{ps: newProcs(), dir: dir, startNs: time.Now().UnixNano()}
	defer s.ps.closeAll()
	h := &holder{name: "r0-job", run: true, hist: filepath.Join(dir, "r0.jsonl")}
	script := `sleep 60 & printf '{"k":"job","pid":%d,"ppid":%d}\n' $! $$ > "$0"; wait`
	p, err := s.ps.start(h.name, nil, filepath.Join(dir, "r0.log"), "/bin/sh", "-c", script, h.hist)
	if err != nil {
		t.Fatal(err)
	}
	h.proc = p
	s.holders = []*holder{h}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.killRun(ctx)
	if len(s.outlive) != 1 || len(s.faults) != 1 || s.faults[0].Kind != FaultKillRun {
		t.Fatalf("outlived %q, faults %+v; want the sleep reported as outliving its parent", s.outlive, s.faults)
	}
	pids := jobPIDs(h)
	if len(pids) != 2 || alive(pids[0]) {
		t.Errorf("job pids %v: the child that outlived its parent is still alive", pids)
	}
}

// TestCheckFrozen: a frozen holder's late write that a fence accepted is a
// violation; refused ones, and writes from before the freeze, are not.
func TestCheckFrozen(t *testing.T) {
	s := &suite{cfg: Config{TTL: 2 * time.Second}}
	h := &holder{name: "w0-m0", freezes: []frozen{{Worker: "w0-m0", Token: 7, From: 1e9, To: 5e9, NewerAdmitted: true}}}
	w := func(tok, call int64, st nemesis.Outcome) nemesis.Access {
		return nemesis.Access{Write: true, Writer: true, Token: tok, Call: call, Ret: call + 1, Status: st}
	}
	for _, tc := range []struct {
		name                 string
		etcd, sql            []nemesis.Access
		violations, refused  int
		allRefused, accepted int
	}{
		{"refused", []nemesis.Access{w(7, 5e9, nemesis.Unknown), w(7, 6e9, nemesis.Rejected)},
			[]nemesis.Access{w(7, 6e9, nemesis.Rejected)}, 0, 2, 1, 0},
		{"accepted", []nemesis.Access{w(7, 5e9, nemesis.Rejected)}, []nemesis.Access{w(7, 6e9, nemesis.OK)}, 1, 1, 0, 1},
		{"before the freeze", []nemesis.Access{w(7, 5e8, nemesis.OK), w(7, 5e9, nemesis.Rejected)}, nil, 0, 1, 1, 0},
	} {
		rep := &Report{}
		row := &Row{Violations: make(map[string]int)}
		l := loaded{acc: map[string][]nemesis.Access{record.RegEtcd: tc.etcd, record.RegSQL: tc.sql}}
		s.checkFrozen(rep, row, h, l, func(row *Row, f nemesis.Finding) {
			row.Violations[f.Checker]++
			rep.Violations++
		})
		if rep.Violations != tc.violations || row.Violations[CheckFrozen] != tc.violations || rep.FrozenLateRefused != tc.refused ||
			rep.FrozenAllRefused != tc.allRefused || rep.FrozenLateAccepted != tc.accepted || rep.FrozenPastTTL != 1 {
			t.Errorf("%s: %+v; want %d violations, %d refused, %d all refused, %d accepted", tc.name, rep, tc.violations, tc.refused, tc.allRefused, tc.accepted)
		}
	}
}
