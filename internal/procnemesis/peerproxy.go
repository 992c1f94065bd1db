package procnemesis

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// peerProxy stands in front of one member's peer listener: it is the
// address the member advertises, so every other member's raft traffic to
// it passes here. etcd's raft transport names its sender in every request
// (the X-Server-From header of its stream, pipeline and snapshot
// requests), and a connection carries the traffic of one sender only, so
// the proxy can cut the link from one given member while letting the
// other through: a stream's connection carries the traffic of both
// directions (the receiver's messages come back in the response), so a
// cut link stops raft messages both ways. Requests that name no sender
// (the peer API's version, members and lease-forwarding calls) are let
// through while the member is cut from some members only, and refused
// once it is cut from all of them.
type peerProxy struct {
	ln     net.Listener
	target string // the member's own peer listener, host:port

	mu  sync.Mutex
	cut map[string]bool // sender member IDs (hex) refused
	// all refuses every connection, whatever its sender: the member is
	// cut from every other, so that peer API calls that name no sender
	// (a lease renewal forwarded by a member of the majority to this
	// former leader) cannot reach it either.
	all   bool
	conns map[net.Conn]string
	wg    sync.WaitGroup
}

func startPeerProxy(target string) (*peerProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &peerProxy{ln: ln, target: target, cut: make(map[string]bool), conns: make(map[net.Conn]string)}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// addr returns the proxy's address, host:port.
func (p *peerProxy) addr() string { return p.ln.Addr().String() }

// setCut refuses the senders in ids from now on (every connection if all),
// and closes their open connections; every other sender is let through.
func (p *peerProxy) setCut(ids []string, all bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut, p.all = make(map[string]bool), all
	for _, id := range ids {
		p.cut[id] = true
	}
	for c, from := range p.conns {
		if p.all || p.cut[from] {
			c.Close()
		}
	}
}

func (p *peerProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *peerProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

// maxHeader bounds the request head the proxy reads to find the sender.
const maxHeader = 16 << 10

// serve relays one connection, unless its sender is cut.
func (p *peerProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, maxHeader)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	from, ok := sender(br)
	_ = c.SetReadDeadline(time.Time{})
	if !ok {
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	if p.all || p.cut[from] || p.conns == nil {
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
		_, _ = io.Copy(up, br) // br holds the request head read so far
		up.Close()
		c.Close()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	up.Close()
	c.Close()
	<-done
}

// sender peeks at the head of the connection's first request and returns
// the X-Server-From header's value ("" if none); false if the head could
// not be read.
func sender(br *bufio.Reader) (string, bool) {
	for n := 1; n <= maxHeader; n = br.Buffered() + 1 {
		b, err := br.Peek(n) // blocks for one more byte than seen: a GET has no body to wait for
		if err != nil {
			return "", false
		}
		b = b[:br.Buffered()]
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			for _, line := range strings.Split(string(b[:i]), "\r\n") {
				k, v, ok := strings.Cut(line, ":")
				if ok && strings.EqualFold(strings.TrimSpace(k), "X-Server-From") {
					return strings.TrimSpace(v), true
				}
			}
			return "", true
		}
	}
	return "", false
}
