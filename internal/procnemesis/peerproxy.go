package procnemesis

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
)

// peerProxy stands in front of one member's peer listener: it is the
// address the member advertises, so every other member's peer traffic to
// it passes here, raft messages and peer API calls alike (version checks,
// lease renewals forwarded to the leader, hashes). It tells the sending
// member of each connection by the process at its other end (see
// socketOwner), not by anything the sender writes, so it can cut the link
// from one given member: a connection from a member whose link is cut is
// refused, and its open ones are closed. A raft stream's connection
// carries the receiver's messages back in its response, so cutting a link
// at both members' proxies stops every call between the two, in both
// directions, while their links to the third member carry on.
type peerProxy struct {
	relays[string]        // by connection, the sending member's name
	target         string // the member's own peer listener, host:port
	// senderOf names the member at the other end of a connection it
	// accepted; false if the connection is no member's.
	senderOf func(net.Conn) (string, bool)

	cut map[string]bool // sending members refused, by name; guarded by mu
}

func startPeerProxy(target string, senderOf func(net.Conn) (string, bool)) (*peerProxy, error) {
	p := &peerProxy{target: target, senderOf: senderOf, cut: make(map[string]bool)}
	if err := p.start(p.serve); err != nil {
		return nil, err
	}
	return p, nil
}

// addr returns the proxy's address, host:port.
func (p *peerProxy) addr() string { return p.ln.Addr().String() }

// setCut refuses the members named from now on, and closes their open
// connections; every other member is let through.
func (p *peerProxy) setCut(names []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = make(map[string]bool)
	for _, n := range names {
		p.cut[n] = true
	}
	for c, from := range p.conns {
		if p.cut[from] {
			c.Close()
		}
	}
}

// serve relays one connection, unless it is no member's or its sender's
// link is cut.
func (p *peerProxy) serve(c net.Conn) {
	defer c.Close()
	from, ok := p.senderOf(c)
	if !ok {
		return
	}
	p.mu.Lock()
	refused := p.cut[from] || p.conns == nil
	p.mu.Unlock()
	if refused {
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	if p.cut[from] || p.conns == nil { // cut while dialling
		p.mu.Unlock()
		return
	}
	p.conns[c] = from
	p.conns[up] = from
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		delete(p.conns, up)
		p.mu.Unlock()
	}()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c)
		up.Close()
		c.Close()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	up.Close()
	c.Close()
	<-done
}

// socketOwner returns the name, in pids (process ID to name), of the
// process that holds the other end of c, a TCP connection this process
// accepted on 127.0.0.1: the kernel's table of TCP sockets
// (/proc/net/tcp) gives the inode of the socket whose local address is
// c's remote one and whose remote address is c's local one, and the
// process whose file descriptors include "socket:[inode]" holds it. It
// returns false if no process of pids does (or the socket is gone).
func socketOwner(c net.Conn, pids map[int]string) (string, bool) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return "", false
	}
	inode, ok := tcpInode(remote, local)
	if !ok {
		return "", false
	}
	want := "socket:[" + inode + "]"
	for pid, name := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(dir + "/" + fd.Name()); err == nil && l == want {
				return name, true
			}
		}
	}
	return "", false
}

// tcpInode returns the inode of the IPv4 TCP socket bound to local and
// connected to remote, from /proc/net/tcp, whose addresses are the IP in
// the host's byte order (little-endian on the machines the suite runs on)
// and the port, in hex.
func tcpInode(local, remote *net.TCPAddr) (string, bool) {
	hex := func(a *net.TCPAddr) (string, bool) {
		ip := a.IP.To4()
		if ip == nil {
			return "", false
		}
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port), true
	}
	l, ok1 := hex(local)
	r, ok2 := hex(remote)
	if !ok1 || !ok2 {
		return "", false
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[1] != l || fs[2] != r {
			continue
		}
		if _, err := strconv.ParseUint(fs[9], 10, 64); err != nil || fs[9] == "0" {
			return "", false
		}
		return fs[9], true
	}
	return "", false
}
