package embedded

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

// Cluster is a cluster of embedded etcd members running in this process.
// Its methods are safe for concurrent use.
type Cluster struct {
	mu      sync.Mutex
	members []*Member // set once by start, then read-only
	// The partitions in effect, by member index: Isolate calls not yet
	// matched by Heal, and pauses of a member's raft traffic not yet
	// ended. Member a drops its traffic with peer b when either is
	// isolated or a is paused; see cutWanted.
	isolated map[int]int
	muted    map[int]int
	// cut holds, for each link a partition cut, the peer of the from
	// member's transport that was paused (see links.go).
	cut         map[link]rafthttp.Pausable
	stopEnforce chan struct{} // closed by Close; nil if no enforcer runs
	enforced    sync.WaitGroup
	owned       []string // directories to remove at Close
	closed      bool
	closeErr    error
}

var errClusterClosed = errors.New("integration: cluster closed while starting")

// NewCluster starts a cluster of n members for a test and waits until every
// member serves clients and a leader is elected. It calls tb.Helper. Member
// i keeps its data in a tb.TempDir() (or dir/m<i> with [WithDataDir]),
// created before the cleanup that closes the cluster is registered. The
// cleanup is registered before anything that can fail or leak, and on any
// error NewCluster fails the test with tb.Fatalf. It blocks for up to the
// start timeout (see [WithStartTimeout]). Peer sockets are created in the
// working directory (see the package documentation). For each member whose
// server reported an error while it ran (see [Member.Err]; in any run,
// restarts included), the cleanup fails the test with tb.Errorf naming the
// member, after closing the cluster.
func NewCluster(tb TB, n int, opts ...Option) *Cluster {
	tb.Helper()
	cfg := newConfig(opts)
	var dirs []string
	if cfg.dataDir == "" && n > 0 {
		dirs = make([]string, n)
		for i := range dirs {
			dirs[i] = tb.TempDir()
		}
	}
	c := &Cluster{}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("integration: closing etcd cluster: %v", err)
		}
		for _, m := range c.Members() {
			m.reportFailure(tb)
		}
	})
	if err := c.start(n, cfg, dirs); err != nil {
		tb.Fatalf("integration: %v", err)
	}
	return c
}

// StartCluster starts a cluster of n members outside a test, with the same
// behaviour as [NewCluster], and returns once every member serves clients
// and a leader is elected. Without [WithDataDir] the data directories are
// new temporary directories removed by Close. The caller must call
// [Cluster.Close]. On error everything started so far has been stopped and
// removed.
func StartCluster(n int, opts ...Option) (*Cluster, error) {
	cfg := newConfig(opts)
	c := &Cluster{}
	var dirs []string
	if cfg.dataDir == "" && n > 0 {
		dir, err := os.MkdirTemp("", "etcdlock-data")
		if err != nil {
			return nil, fmt.Errorf("integration: creating data directory: %w", err)
		}
		c.owned = append(c.owned, dir)
		dirs = make([]string, n)
		for i := range dirs {
			dirs[i] = filepath.Join(dir, fmt.Sprintf("m%d", i))
		}
	}
	if err := c.start(n, cfg, dirs); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(n int, cfg *config, dataDirs []string) error {
	if n < 1 {
		return fmt.Errorf("integration: cluster size %d, want at least 1", n)
	}
	if cfg.clientURL != "" && n > 1 {
		return errors.New("integration: WithClientURL is only supported for a single member")
	}
	if dataDirs == nil {
		dataDirs = make([]string, n)
		for i := range dataDirs {
			dataDirs[i] = filepath.Join(cfg.dataDir, fmt.Sprintf("m%d", i))
		}
	}
	if cfg.tls {
		f, err := makeTLS(tlsHosts(n, cfg.clientURL))
		if err != nil {
			return err
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			_ = os.RemoveAll(f.dir)
			return errClusterClosed
		}
		c.owned = append(c.owned, f.dir)
		c.mu.Unlock()
		cfg.tlsFiles = f
	}
	var sockDir string
	if cfg.clientURL == "" {
		dir, err := makeSocketDir()
		if err != nil {
			return err
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			_ = os.RemoveAll(dir)
			return errClusterClosed
		}
		c.owned = append(c.owned, dir)
		c.mu.Unlock()
		sockDir = dir
	}

	num := seq.Add(1)
	token := fmt.Sprintf("etcdlock-%d-%d", os.Getpid(), num)
	members := make([]*Member, n)
	initial := make([]string, n)
	for i := range members {
		m := &Member{
			c:       c,
			idx:     i,
			name:    fmt.Sprintf("m%d", i),
			cfg:     cfg,
			dataDir: dataDirs[i],
			token:   token,
		}
		// etcd's peer transport dials only the host part of a unix URL, as
		// a path relative to the working directory, and appends ":80" when
		// it has no port: hence a relative name with a port.
		sock := fmt.Sprintf("etcdlock-%d-%d-m%d:2380", os.Getpid(), num, i)
		m.peerURL = url.URL{Scheme: "unix", Host: sock}
		m.listenPeer = []url.URL{m.peerURL}
		abs, err := absPeerSocket(sock)
		if err != nil {
			return err
		}
		m.peerSockPath = abs
		if cfg.clientURL != "" {
			u, err := parseClientURL(cfg)
			if err != nil {
				return err
			}
			m.clientURL = *u
			m.gateway = u.Scheme == "http"
		} else {
			m.clientURL = unixURL(filepath.Join(sockDir, m.name+".sock"), cfg.tls)
		}
		members[i] = m
		initial[i] = m.name + "=" + m.peerURL.String()
	}
	for _, m := range members {
		m.initialCluster = strings.Join(initial, ",")
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClusterClosed
	}
	c.members = members
	c.cut = make(map[link]rafthttp.Pausable)
	if n > 1 {
		c.stopEnforce = make(chan struct{})
		c.enforced.Go(func() { c.enforce(c.stopEnforce) })
	}
	c.mu.Unlock()

	// The readiness waiters end when ctx does (at the latest when this
	// returns, cancel running before Wait) and are waited for, also on an
	// early return.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.startTimeout)
	defer cancel()
	started := make([]chan error, n)
	for i, m := range members {
		m.lifeMu.Lock()
		r, err := m.launch()
		m.lifeMu.Unlock()
		if err != nil {
			if strings.Contains(err.Error(), m.peerURL.Host) {
				err = fmt.Errorf("%w (peer sockets are created in the working directory, which must be writable)", err)
			}
			return err
		}
		ch := make(chan error, 1)
		started[i] = ch
		wg.Go(func() { ch <- waitReady(ctx, r) })
	}
	for i, ch := range started {
		if err := <-ch; err != nil {
			return fmt.Errorf("integration: cluster member %s: %w", members[i].name, err)
		}
	}
	if _, err := c.WaitLeader(ctx); err != nil {
		return err
	}
	if n > 1 && transportOf(members[0].EtcdServer()) == nil {
		return errors.New("integration: cannot reach the raft transport of etcd's server (its internals changed): partitions would cut nothing")
	}
	if cfg.auth {
		return enableAuth(ctx, c.Endpoints(), cfg)
	}
	return nil
}

// config returns the configuration the cluster was started with, or nil.
func (c *Cluster) config() *config {
	if ms := c.Members(); len(ms) > 0 {
		return ms[0].cfg
	}
	return nil
}

// TLS returns the certificate files of a cluster started [WithTLS], or
// nil.
func (c *Cluster) TLS() *TLSFiles {
	if cfg := c.config(); cfg != nil {
		return cfg.tlsFiles
	}
	return nil
}

// Members returns the members, indexed like the i arguments of the other
// methods. The slice is a copy; the members are shared.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Member(nil), c.members...)
}

// Member returns member i. It panics if i is out of range.
func (c *Cluster) Member(i int) *Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i]
}

// Endpoints returns the client endpoints of all members, stopped ones
// included (clientv3 skips those it cannot reach).
func (c *Cluster) Endpoints() []string {
	ms := c.Members()
	eps := make([]string, len(ms))
	for i, m := range ms {
		eps[i] = m.Endpoint()
	}
	return eps
}

// Client returns a new client of all members that is closed at tb cleanup
// (before the cluster, if the cluster was made by [NewCluster] earlier in
// the same test). It fails tb with tb.Fatalf if the client cannot be
// created. The client uses the settings of [Cluster.NewClient]. It does not
// block on the network.
func (c *Cluster) Client(tb TB) *clientv3.Client {
	tb.Helper()
	return testClient(tb, c.Endpoints(), c.config())
}

// NewClient returns a new client of all members; the caller closes it. The
// configuration is that of [Server.NewClient] with the endpoints of all
// members; each cfg function may change it (for example to dial one
// member only) before the client is created.
func (c *Cluster) NewClient(cfg ...func(*clientv3.Config)) (*clientv3.Client, error) {
	return newClient(c.Endpoints(), c.config(), cfg)
}

// leader returns the index of the member that considers itself leader and
// that a majority of all members follows, or -1.
func (c *Cluster) leader() int {
	ms := c.Members()
	leads := make([]uint64, len(ms))
	votes := make(map[uint64]int)
	for i, m := range ms {
		if srv := m.EtcdServer(); srv != nil {
			leads[i] = srv.Lead()
			if leads[i] != 0 {
				votes[leads[i]]++
			}
		}
	}
	for i, m := range ms {
		if id := uint64(m.id); id != 0 && leads[i] == id && votes[id] > len(ms)/2 {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a leader is elected and returns its index: the
// member that considers itself leader and that a majority of all members
// follows (so an isolated member that still believes it leads is not
// returned). It polls every tick (10 ms) until ctx is done and then returns
// ctx's error.
func (c *Cluster) WaitLeader(ctx context.Context) (int, error) {
	t := time.NewTicker(tickMs * time.Millisecond)
	defer t.Stop()
	for {
		if i := c.leader(); i >= 0 {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("integration: waiting for a leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// MoveLeader transfers leadership to member to and waits until a majority
// follows it, or until ctx is done. It does nothing if to already leads.
// Member to must be running and reachable.
func (c *Cluster) MoveLeader(ctx context.Context, to int) error {
	ms := c.Members()
	if to < 0 || to >= len(ms) {
		return fmt.Errorf("integration: member index %d out of range [0,%d)", to, len(ms))
	}
	for {
		lead, err := c.WaitLeader(ctx)
		if err != nil {
			return err
		}
		if lead == to {
			return nil
		}
		srv := ms[lead].EtcdServer()
		if srv == nil {
			continue // stopped meanwhile; wait for the next leader
		}
		if err := srv.MoveLeader(ctx, uint64(ms[lead].id), uint64(ms[to].id)); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("integration: moving leader to %s: %w", ms[to].name, err)
			}
			// Leadership changed under us (e.g. not leader anymore): retry.
			select {
			case <-ctx.Done():
				return fmt.Errorf("integration: moving leader to %s: %w", ms[to].name, err)
			case <-time.After(tickMs * time.Millisecond):
			}
		}
	}
}

// Isolate partitions member i from all other members: from now on each side
// drops the raft messages it would send to or receive from the other (each
// pauses its raft peer for the other). Clients can still reach member i,
// but it can no longer commit anything or serve linearizable reads; if it
// led, it steps down after an election timeout and the others elect a new
// leader. The partition applies to stopped members too, when they restart,
// and to peers that etcd replaces when it applies a snapshot (re-applied
// within 20 ms, so there is a brief window).
//
// Partitions nest: member i stays isolated until every Isolate(i) has been
// matched by a [Cluster.Heal](i), and a link between two members stays cut
// while either of them is isolated, so that overlapping partitions (of the
// same member or of different ones) each end only their own part. Do not
// call the members' CutPeer or MendPeer as well: on etcd v3.7 a MendPeer of
// a link that was not cut can make a later CutPeer wait forever. It does
// not block. It panics if i is out of range.
func (c *Cluster) Isolate(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkIndex(i)
	if c.isolated == nil {
		c.isolated = make(map[int]int)
	}
	c.isolated[i]++
	c.applyLinks(i)
}

// Heal ends one [Cluster.Isolate] of member i; once none is left, member i
// and the others exchange messages again, except
// those that another partition still in effect cuts. A Heal without an
// Isolate to end does nothing. It does not block; the member catches up
// shortly afterwards. It panics if i is out of range.
func (c *Cluster) Heal(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkIndex(i)
	if c.isolated[i] == 0 {
		return
	}
	if c.isolated[i]--; c.isolated[i] == 0 {
		delete(c.isolated, i)
	}
	c.applyLinks(i)
}

// mute makes member i drop the raft messages it would send to and receive
// from every peer, until a matching unmute (the partition of
// [Faults.PauseMember]). Mutes nest like [Cluster.Isolate]. It panics if i
// is out of range.
func (c *Cluster) mute(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkIndex(i)
	if c.muted == nil {
		c.muted = make(map[int]int)
	}
	c.muted[i]++
	c.applyLinks(i)
}

// unmute ends one mute of member i.
func (c *Cluster) unmute(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkIndex(i)
	if c.muted[i] == 0 {
		return
	}
	if c.muted[i]--; c.muted[i] == 0 {
		delete(c.muted, i)
	}
	c.applyLinks(i)
}

// relink applies the partitions in effect to member i's links, after its
// restart.
func (c *Cluster) relink(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applyLinks(i)
}

// checkIndex panics if i is out of range. c.mu is held.
func (c *Cluster) checkIndex(i int) {
	if i < 0 || i >= len(c.members) {
		panic(fmt.Sprintf("integration: member index %d out of range [0,%d)", i, len(c.members)))
	}
}

// cutWanted reports whether member a should drop its traffic with member b.
// c.mu is held.
func (c *Cluster) cutWanted(a, b int) bool {
	return c.isolated[a] > 0 || c.isolated[b] > 0 || c.muted[a] > 0
}

// Close stops all members at once (without leadership transfers) and waits
// for all their goroutines, then removes the directories it created (socket
// directory, peer sockets and, under StartCluster, the data directories;
// tb.TempDir directories are left to the testing package). With clients
// still connected it may wait up to etcd's request timeout (about 5 s) for
// their in-flight requests. Close is idempotent and returns the first call's
// error on later calls.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		err := c.closeErr
		c.mu.Unlock()
		return err
	}
	c.closed = true
	members := c.members
	if c.stopEnforce != nil {
		close(c.stopEnforce)
	}
	c.mu.Unlock()
	c.enforced.Wait()

	var wg sync.WaitGroup
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.stop(true, true)
		}()
	}
	wg.Wait()
	var errs []string
	for _, m := range members {
		m.removePeerSocket()
	}
	for _, dir := range c.owned {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err.Error())
		}
	}
	var err error
	if len(errs) > 0 {
		err = errors.New("integration: removing directories: " + strings.Join(errs, "; "))
	}
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	return err
}
