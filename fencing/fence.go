package fencing

import (
	"errors"
	"fmt"
	"sync"
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
// use. It forgets nothing; one Fence per process that guards a resource is
// the intended use.
type Fence struct {
	mu      sync.Mutex
	highest map[string]int64
}

// Admit accepts t for resource if its revision is at least the highest
// admitted so far for resource, and records it. It returns a *StaleError
// matching ErrStale otherwise. A zero token is always refused. Admit never
// blocks on I/O.
func (f *Fence) Admit(resource string, t Token) error {
	return f.Do(resource, t, nil)
}

// Do admits t for resource and, if admitted, runs fn while holding the
// fence's lock, so no access with a lower token can
// interleave with fn. fn may be nil. It returns a *StaleError or fn's error.
func (f *Fence) Do(resource string, t Token, fn func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.highest[resource]
	if t.IsZero() || t.Revision < h {
		return &StaleError{Resource: resource, Token: t, Highest: h}
	}
	if f.highest == nil {
		f.highest = make(map[string]int64)
	}
	f.highest[resource] = t.Revision
	if fn == nil {
		return nil
	}
	return fn()
}

// Highest returns the highest revision admitted for resource, or 0.
func (f *Fence) Highest(resource string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.highest[resource]
}
