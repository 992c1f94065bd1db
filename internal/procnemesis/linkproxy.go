package procnemesis

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// linkProxy is one worker's connection to one member: a TCP proxy of the
// suite on 127.0.0.1 that can delay the member's answers and drop the
// worker's requests. Its delay is a latency, not a pace: each chunk read
// from the member is written to the worker the delay after it was read,
// whatever came before it, so an answer of several chunks arrives late by
// the delay and no more. Dropped requests are read and discarded; a
// connection that lost bytes is closed once the drop ends (what follows a
// gap would be misread), and its client connects again. Its methods are
// safe for concurrent use.
type linkProxy struct {
	relays[*linkConn]        // by the worker's side of each connection
	target            string // host:port of the member's client listener

	delay atomic.Int64 // nanoseconds
	drop  bool         // guarded by mu
}

// linkConn is one relayed connection.
type linkConn struct {
	lost bool // bytes were dropped: close when the drop ends
}

func startLinkProxy(target string) (*linkProxy, error) {
	p := &linkProxy{target: target}
	if err := p.start(p.serve); err != nil {
		return nil, err
	}
	return p, nil
}

// endpoint returns the URL a client dials.
func (p *linkProxy) endpoint() string { return "http://" + p.ln.Addr().String() }

// setDelay delays the member's answers by d from now on (0: none).
func (p *linkProxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }

// setDrop drops the worker's requests from now on, or stops dropping them
// and closes the connections that lost some.
func (p *linkProxy) setDrop(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop = on
	if on {
		return
	}
	for c, lc := range p.conns {
		if lc.lost {
			c.Close()
		}
	}
}

func (p *linkProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	lc := &linkConn{}
	p.mu.Lock()
	if p.conns == nil {
		p.mu.Unlock()
		return
	}
	p.conns[c] = lc
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Go(func() { // requests: relayed, or dropped
		defer up.Close()
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				p.mu.Lock()
				drop := p.drop
				if drop {
					lc.lost = true
				}
				p.mu.Unlock()
				if !drop {
					if _, werr := up.Write(buf[:n]); werr != nil {
						return
					}
				}
			}
			if err != nil {
				return
			}
		}
	})
	// Answers: each chunk written the delay after it was read.
	type chunk struct {
		at time.Time
		b  []byte
	}
	q := make(chan chunk, 1024)
	wg.Go(func() {
		defer c.Close()
		for ch := range q {
			if d := time.Until(ch.at); d > 0 {
				time.Sleep(d)
			}
			if _, err := c.Write(ch.b); err != nil {
				up.Close()
				for range q { // drain until the reader stops
				}
				return
			}
		}
	})
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			q <- chunk{time.Now().Add(time.Duration(p.delay.Load())), append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			break
		}
	}
	close(q)
	c.Close()
	wg.Wait()
}
