package embedded

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

// paused reports whether member from's transport drops its traffic with
// member to (its peer's unexported paused flag), and whether that peer
// exists. It reads the flag under the peer's mutex, as Pause writes it.
func paused(c *Cluster, from, to int) (cut, ok bool) {
	tr := transportOf(c.Member(from).EtcdServer())
	if tr == nil {
		return false, false
	}
	p := tr.Get(c.Member(to).ID())
	if p == nil {
		return false, false
	}
	v := reflect.ValueOf(p).Elem()
	mu := v.FieldByName("mu")
	lk := reflect.NewAt(mu.Type(), unsafe.Pointer(mu.UnsafeAddr())).Interface().(*sync.Mutex)
	lk.Lock()
	defer lk.Unlock()
	return v.FieldByName("paused").Bool(), true
}

// linkMismatches lists the links of the running members that are not cut
// exactly when the partitions in effect want them cut.
func linkMismatches(c *Cluster) []string {
	var out []string
	n := len(c.Members())
	for a := range n {
		for b := range n {
			if a == b {
				continue
			}
			c.mu.Lock()
			want := c.cutWanted(a, b)
			c.mu.Unlock()
			if got, ok := paused(c, a, b); ok && got != want {
				out = append(out, fmt.Sprintf("link m%d->m%d cut=%v, want %v", a, b, got, want))
			}
		}
	}
	return out
}

// checkLinks fails t unless every link is cut as the partitions want.
func checkLinks(t *testing.T, c *Cluster, when string) {
	t.Helper()
	for _, m := range linkMismatches(c) {
		t.Errorf("%s: %s", when, m)
	}
}

// within runs step and panics with every goroutine's stack if it does not
// return within d: a hang inside etcd cannot be ended any other way.
func within(d time.Duration, name string, step func()) {
	done := make(chan struct{})
	go func() { defer close(done); step() }()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		panic(fmt.Sprintf("%s did not return within %v\n%s", name, d, buf))
	}
}

// A member's transport can hold a "remote" for a member beside its peer:
// etcd adds one when a member's messages arrive while it is not a peer,
// as while a snapshot replaces the peers. Partitions neither resume such a
// remote that runs nor pause it twice (either broke etcd's pipeline
// bookkeeping, so that a later cut waited forever or panicked), and each
// step leaves the links cut exactly as the partitions in effect want.
func TestPartitionsWithRemote(t *testing.T) {
	c := NewCluster(t, 3, WithoutFsync())
	a, b := c.Member(0), c.Member(1)
	tr := transportOf(a.EtcdServer())
	if tr == nil {
		t.Fatal("no transport")
	}
	urls := []string{b.PeerURL()}
	tr.RemovePeer(b.ID())
	tr.AddRemote(b.ID(), urls) // what etcd does for a message from a non-peer
	tr.AddPeer(b.ID(), urls)
	steps := []struct {
		name string
		do   func()
	}{
		{"mute(1)", func() { c.mute(1) }}, // leaves m0->m1 open
		{"unmute(1)", func() { c.unmute(1) }},
		{"Isolate(1)", func() { c.Isolate(1) }},
		{"Isolate(1) again", func() { c.Isolate(1) }},
		{"Isolate(0)", func() { c.Isolate(0) }},
		{"Heal(1)", func() { c.Heal(1) }},
		{"Heal(0)", func() { c.Heal(0) }},
		{"Heal(1) again", func() { c.Heal(1) }},
		{"Heal(1) unmatched", func() { c.Heal(1) }},
		{"mute(0)", func() { c.mute(0) }},
		{"Isolate(1) while m0 is muted", func() { c.Isolate(1) }},
		{"unmute(0)", func() { c.unmute(0) }},
		{"Heal(1) last", func() { c.Heal(1) }},
	}
	for _, s := range steps {
		within(30*time.Second, s.name, s.do)
		checkLinks(t, c, s.name)
	}
	if _, ok := tr.Get(b.ID()).(rafthttp.Pausable); !ok {
		t.Fatal("the peer is not pausable")
	}
	c.mu.Lock()
	left := len(c.cut) + len(c.isolated) + len(c.muted)
	c.mu.Unlock()
	if left != 0 {
		t.Errorf("%d cuts or partitions recorded after every one was undone", left)
	}
}

// replacePeer gives member from's transport a new peer for member to, with
// a running remote beside it: what etcd does when it applies a snapshot
// (it replaces every peer) while to's messages arrive.
func replacePeer(c *Cluster, from, to int) {
	tr := transportOf(c.Member(from).EtcdServer())
	if tr == nil {
		return // stopped
	}
	id, urls := c.Member(to).ID(), []string{c.Member(to).PeerURL()}
	tr.RemovePeer(id)
	tr.AddRemote(id, urls)
	tr.AddPeer(id, urls)
}

// Hundreds of partitions, pauses, their ends, restarts of isolated
// members, leadership moves and peer replacements, in random order, never
// hang, and after each step the links are cut exactly as the partitions in
// effect want (after a peer replacement, once the enforcer re-applied
// them). The package's TestMain checks that no goroutine is left.
func TestLinkFaultsInRandomOrder(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 50
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d rounds", seed, rounds)
	rng := rand.New(rand.NewPCG(seed, seed))
	c := NewCluster(t, 3, WithoutFsync())
	cli, err := c.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var isolated, muted [3]int
	for r := range rounds {
		i, j := rng.IntN(3), rng.IntN(3)
		var name string
		var step func()
		switch rng.IntN(8) {
		case 0:
			name, step = fmt.Sprintf("Isolate(%d)", i), func() { c.Isolate(i); isolated[i]++ }
		case 1:
			name, step = fmt.Sprintf("Heal(%d)", i), func() { c.Heal(i); isolated[i] = max(0, isolated[i]-1) }
		case 2:
			name, step = fmt.Sprintf("mute(%d)", i), func() { c.mute(i); muted[i]++ }
		case 3:
			name, step = fmt.Sprintf("unmute(%d)", i), func() { c.unmute(i); muted[i] = max(0, muted[i]-1) }
		case 4:
			name, step = fmt.Sprintf("restart m%d (isolated %d)", i, isolated[i]), func() {
				m := c.Member(i)
				_ = m.HardStop()
				// A partitioned member cannot become ready: wait a moment only.
				rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
				_ = m.Restart(rctx)
			}
		case 5:
			name, step = fmt.Sprintf("MoveLeader(%d)", i), func() {
				mctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				_ = c.MoveLeader(mctx, i)
			}
		case 6:
			if i == j {
				j = (i + 1) % 3
			}
			name, step = fmt.Sprintf("replace m%d's peer for m%d", i, j), func() { replacePeer(c, i, j) }
		default:
			name, step = "Put", func() {
				pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				defer cancel()
				_, _ = cli.Put(pctx, "k", fmt.Sprint(r))
			}
		}
		within(30*time.Second, fmt.Sprintf("round %d (seed %d): %s", r, seed, name), step)
		waitLinks(t, c, fmt.Sprintf("round %d: %s", r, name))
	}
	for i := range 3 {
		for range isolated[i] {
			c.Heal(i)
		}
		for range muted[i] {
			c.unmute(i)
		}
	}
	checkLinks(t, c, "all healed")
	if _, err := c.WaitLeader(ctx); err != nil {
		t.Fatalf("no leader once every partition healed: %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	if _, err := cli.Put(pctx, "k", "end"); err != nil {
		t.Fatalf("put once every partition healed: %v", err)
	}
}

// waitLinks waits, up to a second, until the links are cut as the
// partitions in effect want, then checks them (failing t if they are not).
func waitLinks(t *testing.T, c *Cluster, when string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && len(linkMismatches(c)) > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	checkLinks(t, c, when)
}
