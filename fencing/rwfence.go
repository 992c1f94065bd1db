package fencing

import "sync"

// RWFence is the fence of a resource guarded by a lock.RWMutex: it admits
// the accesses of current holders and refuses those of stale ones. For each
// resource it keeps the highest token revision admitted from anyone and the
// highest admitted from a writer; a write needs at least the first, a read
// at least the second (read holds overlap, so their tokens are not
// ordered among themselves; see lock.RWMutex).
//
// Admit every access atomically with it: AdmitWrite while holding the
// resource's own exclusive lock for the write, AdmitRead while holding at
// least its shared lock for the read, so that no admitted write can slip
// between a read's admission and the read.
//
// The zero RWFence is empty and ready to use. An RWFence is safe for
// concurrent use and never blocks on I/O. It forgets nothing.
type RWFence struct {
	mu sync.Mutex
	m  map[string]rwMarks
}

type rwMarks struct{ all, write int64 }

// AdmitWrite accepts t, a write hold's token, for resource if it is at least
// every token admitted so far for resource, and records it. Otherwise it
// returns a *StaleError matching ErrStale; a token with no positive
// revision (not from a grant) always is.
func (f *RWFence) AdmitWrite(resource string, t Token) error {
	return f.admit(resource, t, true)
}

// AdmitRead accepts t, a read hold's token, for resource if it is at least
// every write token admitted so far for resource, and records it. Otherwise
// it returns a *StaleError matching ErrStale; a token with no positive
// revision (not from a grant) always is.
func (f *RWFence) AdmitRead(resource string, t Token) error {
	return f.admit(resource, t, false)
}

func (f *RWFence) admit(resource string, t Token, write bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.m[resource]
	floor := h.write
	if write {
		floor = h.all
	}
	if t.Revision <= 0 || t.Revision < floor { // no grant has a revision <= 0
		return &StaleError{Resource: resource, Token: t, Highest: floor}
	}
	if f.m == nil {
		f.m = make(map[string]rwMarks)
	}
	h.all = max(h.all, t.Revision)
	if write {
		h.write = t.Revision
	}
	f.m[resource] = h
	return nil
}

// Highest returns the highest token revision admitted for resource from
// anyone, and from a writer; zero for none.
func (f *RWFence) Highest(resource string) (all, write int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.m[resource]
	return h.all, h.write
}
