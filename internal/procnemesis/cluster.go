package procnemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// member is one etcd server process and the proxy in front of its peer
// listener.
type member struct {
	idx        int
	name       string
	dir        string // data dir
	clientURL  string
	listenPeer string // its own peer listener
	proxy      *peerProxy

	proc   *proc // nil while killed
	frozen bool  // SIGSTOP'd
	// pid is proc's process ID, 0 while killed: the peer proxies read it
	// to tell which member a connection comes from.
	pid atomic.Int64
}

// cluster is three etcd server processes on the loopback address, fsync
// on, each with its data dir under dir.
type cluster struct {
	ps  *procs
	bin string
	dir string
	// logLevel is the members' log level (etcd's -log-level).
	logLevel string
	initial  string
	members  []*member
	cli      *clientv3.Client // to every member, for the suite's own reads

	mu  sync.Mutex
	cut map[[2]int]bool // links cut, as sorted pairs of member indexes
}

// freePort returns a TCP address on 127.0.0.1 whose port is free right
// now, for a member's listener. The port is taken below the kernel's
// ephemeral range: one picked by binding port 0 and closed again can be
// given to any process's outgoing connection as its local port before the
// member binds it, or while a killed member is down, and the member then
// fails with "address already in use". Below the range only another
// listener can take it, and a port handed out once in this process is not
// handed out again.
func freePort() (string, error) {
	ports.mu.Lock()
	defer ports.mu.Unlock()
	lo := ephemeralLow()
	if lo < 2048 { // no room below the range: fall back to the kernel's pick
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer ln.Close()
		return ln.Addr().String(), nil
	}
	for range 1000 {
		p := lo/2 + rand.IntN(lo-lo/2)
		if ports.used[p] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		ports.used[p] = true
		return addr, nil
	}
	return "", fmt.Errorf("procnemesis: no free port in [%d, %d)", lo/2, lo)
}

// ports are the ports freePort handed out in this process.
var ports = struct {
	mu   sync.Mutex
	used map[int]bool
}{used: make(map[int]bool)}

// ephemeralLow returns the low end of the kernel's range of local ports
// for outgoing connections (Linux's ip_local_port_range; 32768 where it
// cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}

// startCluster starts the three members and waits until each is ready.
func startCluster(ctx context.Context, ps *procs, bin, dir string, n int, logLevel string) (_ *cluster, err error) {
	c := &cluster{ps: ps, bin: bin, dir: dir, logLevel: logLevel, cut: make(map[[2]int]bool)}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	var initial []string
	for i := range n {
		m := &member{idx: i, name: fmt.Sprintf("m%d", i), dir: filepath.Join(dir, fmt.Sprintf("m%d", i))}
		ca, err := freePort()
		if err != nil {
			return nil, err
		}
		if m.listenPeer, err = freePort(); err != nil {
			return nil, err
		}
		m.clientURL = "http://" + ca
		if m.proxy, err = startPeerProxy(m.listenPeer, c.senderOf); err != nil {
			return nil, err
		}
		c.mu.Lock() // the proxies read the members
		c.members = append(c.members, m)
		c.mu.Unlock()
		initial = append(initial, m.name+"=http://"+m.proxy.addr())
	}
	c.initial = strings.Join(initial, ",")
	ready := make([]chan string, n)
	for i, m := range c.members {
		if ready[i], err = c.launch(m); err != nil {
			return nil, err
		}
	}
	for i, m := range c.members {
		if err := c.waitReady(ctx, m, ready[i]); err != nil {
			return nil, err
		}
	}
	c.cli, err = clientv3.New(clientv3.Config{Endpoints: c.endpoints(), DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second, Logger: zap.NewNop()})
	return c, err
}

// senderOf names the member whose process holds the other end of c, a
// connection to one of the peer proxies.
func (c *cluster) senderOf(conn net.Conn) (string, bool) {
	c.mu.Lock()
	members := c.members
	c.mu.Unlock()
	pids := make(map[int]string)
	for _, m := range members {
		if pid := m.pid.Load(); pid > 0 {
			pids[int(pid)] = m.name
		}
	}
	return socketOwner(conn, pids)
}

// endpoints returns every member's client URL.
func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// launch starts m's process; the channel receives its member ID once
// it is ready (the peer proxies tell members by their processes, not
// their IDs).
func (c *cluster) launch(m *member) (chan string, error) {
	ready := make(chan string, 1)
	p, err := c.ps.start(m.name, &readyWriter{ch: ready}, m.dir+".log", c.bin,
		"-name", m.name, "-data-dir", m.dir, "-listen-client", m.clientURL,
		"-listen-peer", "http://"+m.listenPeer, "-advertise-peer", "http://"+m.proxy.addr(),
		"-initial-cluster", c.initial, "-log-level", c.logLevel)
	if err != nil {
		return nil, err
	}
	m.proc, m.frozen = p, false
	m.pid.Store(int64(p.pid()))
	return ready, nil
}

// memberStartTimeout bounds a member's start: a restarted member
// replays its WAL and catches up from the leader.
const memberStartTimeout = 60 * time.Second

func (c *cluster) waitReady(ctx context.Context, m *member, ready chan string) error {
	t := time.NewTimer(memberStartTimeout)
	defer t.Stop()
	select {
	case <-ready:
		return nil
	case <-m.proc.done:
		b, _ := os.ReadFile(m.dir + ".log")
		return fmt.Errorf("procnemesis: member %s exited before ready: %v\n%s", m.name, m.proc.err, tail(b, 2000))
	case <-t.C:
		return fmt.Errorf("%w: %s", errNotReady, m.name)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// readyWriter is a member's stdout: it sends the ID of its "ready" line.
type readyWriter struct {
	mu  sync.Mutex
	buf []byte
	ch  chan string
}

func (w *readyWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if id, ok := strings.CutPrefix(line, "ready "); ok {
			select {
			case w.ch <- id:
			default:
			}
		}
	}
}

// kill SIGKILLs member i and reaps it.
func (c *cluster) kill(i int) {
	m := c.members[i]
	if m.proc == nil {
		return
	}
	m.pid.Store(0)
	m.proc.killGroup()
	<-m.proc.done
	m.proc, m.frozen = nil, false
}

// restart starts a killed member i again on its data dir and waits until
// it is ready.
func (c *cluster) restart(ctx context.Context, i int) error {
	m := c.members[i]
	if m.proc != nil {
		return nil
	}
	ready, err := c.launch(m)
	if err != nil {
		return err
	}
	return c.waitReady(ctx, m, ready)
}

// freeze SIGSTOPs member i; thaw SIGCONTs it.
func (c *cluster) freeze(i int) {
	if m := c.members[i]; m.proc != nil {
		m.proc.signal(syscall.SIGSTOP)
		m.frozen = true
	}
}

func (c *cluster) thaw(i int) {
	if m := c.members[i]; m.proc != nil {
		m.proc.signal(syscall.SIGCONT)
		m.frozen = false
	}
}

// partition cuts the links given (pairs of member indexes), and mends
// every other link.
func (c *cluster) partition(links [][2]int) {
	c.mu.Lock()
	c.cut = make(map[[2]int]bool)
	for _, l := range links {
		a, b := min(l[0], l[1]), max(l[0], l[1])
		c.cut[[2]int{a, b}] = true
	}
	c.mu.Unlock()
	c.applyCuts()
}

// applyCuts tells each member's proxy which members to refuse.
func (c *cluster) applyCuts() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		var names []string
		for _, o := range c.members {
			a, b := min(m.idx, o.idx), max(m.idx, o.idx)
			if o != m && c.cut[[2]int{a, b}] {
				names = append(names, o.name)
			}
		}
		m.proxy.setCut(names)
	}
}

// leader returns the index of the member that says it leads, or -1.
func (c *cluster) leader(ctx context.Context) int {
	for i, m := range c.members {
		if m.proc == nil || m.frozen {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.cli.Status(sctx, m.clientURL)
		cancel()
		if err == nil && st.Header.MemberId == st.Leader {
			return i
		}
	}
	return -1
}

// heal thaws every member, restarts every killed one and mends every link.
func (c *cluster) heal(ctx context.Context) error {
	c.partition(nil)
	var err error
	for i, m := range c.members {
		c.thaw(i)
		if m.proc == nil {
			if e := c.restart(ctx, i); e != nil && err == nil {
				err = e
			}
		}
	}
	return err
}

// close kills every member and closes the proxies and the client.
func (c *cluster) close() {
	if c.cli != nil {
		c.cli.Close()
	}
	for i, m := range c.members {
		c.kill(i)
		m.proxy.close()
	}
}
