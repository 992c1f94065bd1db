package queue

import (
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/keys"
)

// Slots hands out waiter keys of one queue for one lease and takes them back
// once they are known to be deleted, so key names are reused. Reuse is safe
// because every check and every delete compares the key's create revision,
// never its name alone. The zero Slots is ready; it is safe for concurrent
// use.
type Slots struct {
	mu    sync.Mutex
	lease clientv3.LeaseID
	pool  uint32
	free  []int64
	next  int64
}

// take returns a key for lease and the function that gives it back. Only
// this pool ever makes this key, which is what lets an enqueue that finds
// its key already there treat it as its own late put.
func (s *Slots) take(prefix string, lease clientv3.LeaseID) (string, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lease != s.lease { // a new lease: its keys are new names anyway
		s.lease, s.pool, s.free, s.next = lease, keys.NewPool(), nil, 0
	}
	var n int64
	if l := len(s.free); l > 0 {
		n, s.free = s.free[l-1], s.free[:l-1]
	} else {
		n = s.next
		s.next++
	}
	var once sync.Once
	return keys.Slot(prefix, lease, s.pool, n), func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.lease == lease {
				s.free = append(s.free, n)
			}
		})
	}
}
