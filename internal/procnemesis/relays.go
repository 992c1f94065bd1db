package procnemesis

import (
	"net"
	"sync"
)

// relays is what the suite's proxies share: the listener, its accept loop,
// and the open connections, each with the proxy's state of it (T). mu
// guards conns and whatever else of the proxy's state goes with them.
type relays[T any] struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]T
	wg    sync.WaitGroup // the accept loop and every relay
}

// start listens on a new loopback port and serves each connection with
// serve, on a goroutine of its own, until close.
func (r *relays[T]) start(serve func(net.Conn)) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	r.ln, r.conns = ln, make(map[net.Conn]T)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				serve(c)
			}()
		}
	}()
	return nil
}

// close stops accepting, closes every connection and waits for the
// relays. It is idempotent.
func (r *relays[T]) close() {
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}
