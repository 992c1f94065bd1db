package queue

import (
	"sync"
	"sync/atomic"

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
	// names caches the keys made for this lease: the same few are taken
	// again and again. Copies of a Queue (a read-write lock's two) share
	// their Slots under different prefixes. A slice: most Slots name one
	// or two keys, for which a map costs several times as much.
	names []slotName
}

// maxNamedSlots bounds Slots.names.
const maxNamedSlots = 64

type slotName struct {
	prefix string
	n      int64
	name   string
}

// take returns a key for lease and the function that gives it back. Only
// this pool ever makes this key, which is what lets an enqueue that finds
// its key already there treat it as its own late put.
func (s *Slots) take(prefix string, lease clientv3.LeaseID) (string, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lease != s.lease { // a new lease: its keys are new names anyway
		s.lease, s.pool, s.free, s.next, s.names = lease, keys.NewPool(), nil, 0, nil
	}
	var n int64
	if l := len(s.free); l > 0 {
		n, s.free = s.free[l-1], s.free[:l-1]
	} else {
		n = s.next
		s.next++
	}
	var name string
	for _, x := range s.names {
		if x.n == n && x.prefix == prefix {
			name = x.name
			break
		}
	}
	if name == "" {
		name = keys.Slot(prefix, lease, s.pool, n)
		if n < maxNamedSlots { // slots lost to failed cleanups are not reused
			s.names = append(s.names, slotName{prefix, n, name})
		}
	}
	sl := &slot{s: s, lease: lease, n: n}
	return name, sl.give
}

// slot is a key taken from a Slots.
type slot struct {
	s     *Slots
	lease clientv3.LeaseID
	n     int64
	given atomic.Bool
}

// give gives the slot back, once.
func (sl *slot) give() {
	if sl.given.Swap(true) {
		return
	}
	s := sl.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease == sl.lease {
		s.free = append(s.free, sl.n)
	}
}
