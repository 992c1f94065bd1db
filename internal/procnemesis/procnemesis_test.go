package procnemesis

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

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
	// 8 locks, not the 16 of a long run: CI's machine is shared.
	cfg := Config{Duration: d, Shards: 8, Seed: *seed, Dir: *keep}
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

// TestPeerProxyCuts: the proxy relays a connection from a member, refuses
// it once that member's link is cut (closing the open connection), lets
// other members through, refuses connections that are no member's, and
// lets the member through again once mended. Members are told by the
// client port here (the suite tells them by process: TestSocketOwner).
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
	var (
		mu    sync.Mutex
		ports = make(map[int]string) // client port to member name
	)
	senderOf := func(c net.Conn) (string, bool) {
		port := c.RemoteAddr().(*net.TCPAddr).Port
		for range 200 { // the dialler names its port right after the dial
			mu.Lock()
			name, ok := ports[port]
			mu.Unlock()
			if ok {
				return name, name != ""
			}
			time.Sleep(10 * time.Millisecond)
		}
		return "", false
	}
	p, err := startPeerProxy(ln.Addr().String(), senderOf)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// dial connects as member from ("": no member) and reports whether a
	// line sent is echoed back through the proxy.
	dial := func(from string) (net.Conn, bool) {
		c, err := net.Dial("tcp", p.addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		mu.Lock()
		ports[c.LocalAddr().(*net.TCPAddr).Port] = from
		mu.Unlock()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("GET /version HTTP/1.1\r\n")); err != nil {
			return c, false
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return c, err == nil && strings.HasPrefix(line, "GET ")
	}
	a, ok := dial("aa")
	if !ok {
		t.Fatal("a connection from aa was not relayed")
	}
	p.setCut([]string{"aa"})
	if _, err := a.Read(make([]byte, 1)); err == nil {
		t.Error("aa's open connection survived the cut")
	}
	if _, ok := dial("aa"); ok {
		t.Error("a new connection from aa was relayed while cut")
	}
	if _, ok := dial("bb"); !ok {
		t.Error("a connection from bb was not relayed while only aa is cut")
	}
	if _, ok := dial(""); ok {
		t.Error("a connection from no member was relayed")
	}
	p.setCut(nil)
	if _, ok := dial("aa"); !ok {
		t.Error("a connection from aa was not relayed once mended")
	}
	for _, c := range conns {
		c.Close()
	}
	p.close()
	ln.Close()
	<-done
}

// TestSocketOwner: socketOwner finds this process at the other end of a
// connection it made to itself, and no owner among processes that do not
// hold it.
func TestSocketOwner(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if name, ok := socketOwner(s, map[int]string{1: "init", os.Getpid(): "self"}); !ok || name != "self" {
		t.Errorf("socketOwner = %q, %v; want this process", name, ok)
	}
	if name, ok := socketOwner(s, map[int]string{1: "init"}); ok {
		t.Errorf("socketOwner = %q among processes that do not hold the socket", name)
	}
}

// TestCutLinkDropsEveryCall: a cut link between a follower and the leader
// stops the peer calls that name no sender too. The follower forwards a
// client's lease renewal to the leader over the peer API (a call without
// X-Server-From): it goes through before the cut and after the link is
// mended, and not while the link is cut, even at once, while the follower
// still takes the leader for its leader.
func TestCutLinkDropsEveryCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := build(ctx, bin, false); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	ps := newProcs()
	defer ps.closeAll()
	c, err := startCluster(ctx, ps, filepath.Join(bin, "etcdserver"), filepath.Join(dir, "data"), 3, "error")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	lead := -1
	for end := time.Now().Add(30 * time.Second); lead < 0 && time.Now().Before(end); {
		if lead = c.leader(ctx); lead < 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if lead < 0 {
		t.Fatal("no leader within 30s")
	}
	f := (lead + 1) % 3
	lease, err := c.cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	fcli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.members[f].clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer fcli.Close()
	renew := func(d time.Duration) error {
		rctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		_, err := fcli.KeepAliveOnce(rctx, lease.ID)
		return err
	}
	if err := renew(5 * time.Second); err != nil {
		t.Fatalf("a renewal through follower %s before the cut: %v", c.members[f].name, err)
	}
	c.partition([][2]int{{f, lead}})
	if err := renew(time.Second); err == nil {
		t.Errorf("a renewal through follower %s reached leader %s across their cut link", c.members[f].name, c.members[lead].name)
	}
	c.partition(nil)
	var rerr error
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		if rerr = renew(2 * time.Second); rerr == nil {
			break
		}
	}
	if rerr != nil {
		t.Errorf("renewals through follower %s fail after the link was mended: %v", c.members[f].name, rerr)
	}
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
	// The shell forks a child for sleep, which names dir too until it
	// execs sleep: look again until that is done (bounded).
	left := leftovers(dir)
	for end := time.Now().Add(5 * time.Second); len(left) > 1 && time.Now().Before(end); left = leftovers(dir) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(left) != 1 || !strings.Contains(left[0], dir) || !strings.HasPrefix(left[0], strconv.Itoa(p.pid())+": ") {
		t.Errorf("leftovers = %q, want the sleeper (pid %d)", left, p.pid())
	}
	if !alive(p.pid()) {
		t.Error("the sleeper is not alive")
	}
	ps.closeAll()
	if left := leftoversAfterKill(dir); len(left) != 0 {
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
