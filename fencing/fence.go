package fencing

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrStale is returned by Fence.Admit for a token older than one the fence
// has already admitted for the same resource.
var ErrStale = errors.New("fencing: stale token")

// StaleError is the error Fence.Admit returns; it matches ErrStale.
type StaleError struct {
	Resource string // the resource the token was refused for
	Token    Token  // the token refused
	Highest  int64  // the highest revision admitted for Resource
}

// Error names the token, the resource and the highest revision admitted.
func (e *StaleError) Error() string {
	return fmt.Sprintf("fencing: stale token %s for %q: highest admitted is %d", e.Token, e.Resource, e.Highest)
}

// Is reports whether target is ErrStale.
func (e *StaleError) Is(target error) bool { return target == ErrStale }

// Fence keeps, for each resource, the highest token revision it has
// admitted, and refuses lower ones. It is what a resource outside etcd (a
// file, a service, an in-memory store) uses to refuse a stale holder.
//
// Admit every access, reads as well as writes, and do it atomically with the
// access: check-then-act from outside the resource reopens the race that
// fencing closes.
//
// The zero Fence is empty and ready to use. A Fence is safe for concurrent
// use; resources are independent: an access to one (Do's fn) never delays
// an Admit, Do or Highest for another. It forgets nothing; one Fence per
// process that guards a resource is the intended use.
type Fence struct {
	mu        sync.Mutex // guards resources
	resources map[string]*fenced
}

// fenced is one resource's state.
type fenced struct {
	mu      sync.Mutex   // held across an admission and Do's fn
	highest atomic.Int64 // written under mu
}

func (f *Fence) resource(name string) *fenced {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.resources[name]
	if r == nil {
		if f.resources == nil {
			f.resources = make(map[string]*fenced)
		}
		r = &fenced{}
		f.resources[name] = r
	}
	return r
}

// Admit accepts t for resource if its revision is at least the highest
// admitted so far for resource, and records it. It returns a *StaleError
// matching ErrStale otherwise. Only the revision is compared, so a resource
// that is handed just the number (etcdlock run's $ETCDLOCK_TOKEN) may pass
// Token{Revision: n}. A token with no positive revision (the zero Token, or
// one not from a grant) is always refused. Admit does no I/O; it waits only
// for a Do's fn running on the same resource.
func (f *Fence) Admit(resource string, t Token) error {
	return f.Do(resource, t, nil)
}

// Do admits t for resource and, if admitted, runs fn while holding the
// resource's lock, so that no other admission for resource (and so no
// access with a lower token) can interleave with fn; other resources are
// not held up. fn may be nil; it must not call Admit or Do for the same
// resource, which would wait for fn. It returns a *StaleError, or fn's
// error.
func (f *Fence) Do(resource string, t Token, fn func() error) error {
	if t.Revision <= 0 { // no grant has one: refused without a record of resource
		return &StaleError{Resource: resource, Token: t, Highest: f.Highest(resource)}
	}
	r := f.resource(resource)
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.highest.Load()
	if t.IsZero() || t.Revision < h {
		return &StaleError{Resource: resource, Token: t, Highest: h}
	}
	r.highest.Store(t.Revision)
	if fn == nil {
		return nil
	}
	return fn()
}

// Highest returns the highest revision admitted for resource, or 0. It
// does not wait for a Do's fn.
func (f *Fence) Highest(resource string) int64 {
	f.mu.Lock()
	r := f.resources[resource]
	f.mu.Unlock()
	if r == nil {
		return 0
	}
	return r.highest.Load()
}
