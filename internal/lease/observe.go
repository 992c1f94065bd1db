package lease

import (
	"sync"
	"sync/atomic"
	"time"
)

// renewObservers are the functions told of each acknowledged renewal (see
// OnRenew). The zero value is ready; it is safe for concurrent use.
type renewObservers struct {
	n  atomic.Int32 // len(fs): a keeper without observers reads only this
	mu sync.Mutex
	fs map[*func(time.Duration)]struct{}
}

// OnRenew has f called, on the keeper's goroutine, at each acknowledged
// renewal with the time that was left before the deadline it replaces
// (negative if it had passed); not for a renewal before any deadline was
// known. f must return quickly. remove stops the calls; it is idempotent.
func (k *Keeper) OnRenew(f func(left time.Duration)) (remove func()) {
	o := &k.obs
	p := &f
	o.mu.Lock()
	if o.fs == nil {
		o.fs = make(map[*func(time.Duration)]struct{})
	}
	o.fs[p] = struct{}{}
	o.n.Store(int32(len(o.fs)))
	o.mu.Unlock()
	return func() {
		o.mu.Lock()
		delete(o.fs, p)
		o.n.Store(int32(len(o.fs)))
		o.mu.Unlock()
	}
}

// renewed tells the observers of a renewal acknowledged now, before it
// moves k's deadline.
func (o *renewObservers) renewed(k *Keeper) {
	if o.n.Load() == 0 {
		return
	}
	d, _ := k.Deadline()
	if d.IsZero() {
		return
	}
	left := time.Until(d)
	o.mu.Lock()
	fs := make([]func(time.Duration), 0, len(o.fs))
	for p := range o.fs {
		fs = append(fs, *p)
	}
	o.mu.Unlock()
	for _, f := range fs {
		f(left)
	}
}

// Changed returns a channel closed at the keeper's next change of state:
// a renewal acknowledged, the deadline passed, or the lease found gone.
func (k *Keeper) Changed() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}
