package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// ErrDuplicateLock is returned by NewMultiLock when two parts name the same
// lock (the same key prefix: namespace, kind and name), such as the read and
// the write side of one RWMutex.
var ErrDuplicateLock = errors.New("lock: the same lock given twice")

// Part is one lock of a MultiLock: a Mutex, one side of an RWMutex, or
// permits of a Semaphore. Make one with MutexPart, ReadPart, WritePart or
// PermitsPart; the zero Part is invalid.
type Part struct {
	prefix  string
	acquire func(ctx context.Context, mode queue.Mode) (*Hold, error)
	err     error
}

// MutexPart is m, taken with Lock (TryLock for MultiLock.TryLock).
func MutexPart(m *Mutex) Part {
	if m == nil {
		return Part{err: fmt.Errorf("%w: nil Mutex in a MultiLock", ErrInvalidOption)}
	}
	if m.etcdLayout() {
		return Part{err: fmt.Errorf("%w: a Mutex in etcd's layout in a MultiLock", ErrInvalidOption)}
	}
	return Part{prefix: m.Prefix(), acquire: func(ctx context.Context, mode queue.Mode) (*Hold, error) {
		if mode == queue.Try {
			return m.TryLock(ctx)
		}
		return m.Lock(ctx)
	}}
}

// ReadPart is a read hold of m (RLock).
func ReadPart(m *RWMutex) Part {
	if m == nil {
		return Part{err: fmt.Errorf("%w: nil RWMutex in a MultiLock", ErrInvalidOption)}
	}
	return Part{prefix: m.Prefix(), acquire: func(ctx context.Context, mode queue.Mode) (*Hold, error) {
		return m.acquire(ctx, &m.reader, mode)
	}}
}

// WritePart is a write hold of m (Lock).
func WritePart(m *RWMutex) Part {
	if m == nil {
		return Part{err: fmt.Errorf("%w: nil RWMutex in a MultiLock", ErrInvalidOption)}
	}
	return Part{prefix: m.Prefix(), acquire: func(ctx context.Context, mode queue.Mode) (*Hold, error) {
		return m.acquire(ctx, &m.writer, mode)
	}}
}

// PermitsPart is k permits of s (Acquire); k must be in [1, s.Limit()].
func PermitsPart(s *Semaphore, k int64) Part {
	if s == nil {
		return Part{err: fmt.Errorf("%w: nil Semaphore in a MultiLock", ErrInvalidOption)}
	}
	if k < 1 || k > s.limit {
		return Part{err: fmt.Errorf("%w: %d permits of semaphore %q with limit %d", ErrInvalidPermits, k, s.name, s.limit)}
	}
	return Part{prefix: s.Prefix(), acquire: func(ctx context.Context, mode queue.Mode) (*Hold, error) {
		return s.acquire(ctx, k, mode)
	}}
}

// MultiLock takes several locks as one, all or nothing. It acquires them
// one after the other in one canonical order, by key prefix (namespace,
// kind, name), whatever order they were given in, so that two MultiLocks
// (or a MultiLock and a plain lock) over overlapping locks can never wait
// for each other in a cycle. A MultiLock holds no state of its own: it is
// safe for concurrent use, each call is its own waiter, and closing the
// parts' locks is their owner's business.
type MultiLock struct {
	parts []Part
}

// NewMultiLock returns the MultiLock of parts. It does no I/O. It returns
// ErrInvalidOption for no parts or a zero Part (or one made from a nil
// lock), ErrInvalidPermits for a bad PermitsPart, and ErrDuplicateLock when
// two parts are the same lock.
func NewMultiLock(parts ...Part) (*MultiLock, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: a MultiLock of no locks", ErrInvalidOption)
	}
	sorted := slices.Clone(parts)
	for i, p := range sorted {
		switch {
		case p.err != nil:
			return nil, p.err
		case p.acquire == nil:
			return nil, fmt.Errorf("%w: part %d of a MultiLock is the zero Part", ErrInvalidOption, i)
		}
	}
	slices.SortFunc(sorted, func(a, b Part) int {
		switch {
		case a.prefix < b.prefix:
			return -1
		case a.prefix > b.prefix:
			return 1
		}
		return 0
	})
	for i := 1; i < len(sorted); i++ {
		if sorted[i].prefix == sorted[i-1].prefix {
			return nil, fmt.Errorf("%w: %s", ErrDuplicateLock, sorted[i].prefix)
		}
	}
	return &MultiLock{parts: sorted}, nil
}

// Prefixes returns the key prefixes of the parts, in the order they are
// acquired.
func (m *MultiLock) Prefixes() []string {
	out := make([]string, len(m.parts))
	for i, p := range m.parts {
		out[i] = p.prefix
	}
	return out
}

// Lock blocks until every part is held, and returns them as one hold. On
// failure (ctx ended, a part's acquire failed, or a part lost before the
// last was granted) it unlocks the parts it took, on a context of its own
// bounded by 5 s, leaves no key behind, and returns that part's error: an
// acquire's (see the package doc), or a loss matching ErrLost.
func (m *MultiLock) Lock(ctx context.Context) (*MultiHold, error) {
	return m.acquire(ctx, queue.Wait)
}

// TryLock takes every part with its Try form and returns ErrLocked, having
// unlocked the parts it took, as soon as one would have to wait.
func (m *MultiLock) TryLock(ctx context.Context) (*MultiHold, error) {
	return m.acquire(ctx, queue.Try)
}

// Do locks every part, runs fn with the parts' tokens (in the order of
// Prefixes) and a context cancelled when any part is lost (or ctx ends),
// then unlocks them all on a context of its own bounded by 5 s. Its errors
// are Mutex.Do's.
func (m *MultiLock) Do(ctx context.Context, fn func(ctx context.Context, tokens []fencing.Token) error) error {
	h, err := m.Lock(ctx)
	if err != nil {
		return err
	}
	return runHeld(ctx, h.Context(), h.Unlock, func(fctx context.Context) error { return fn(fctx, h.Tokens()) })
}

func (m *MultiLock) acquire(ctx context.Context, mode queue.Mode) (*MultiHold, error) {
	if err := context.Cause(ctx); err != nil { // a nil ctx panics here
		return nil, err
	}
	holds := make([]*Hold, 0, len(m.parts))
	fail := func(err error) (*MultiHold, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queue.CleanupTimeout)
		defer cancel()
		unlockAll(cctx, holds, make([]bool, len(holds)))
		return nil, err
	}
	for _, p := range m.parts {
		h, err := p.acquire(ctx, mode)
		if err != nil {
			return fail(err)
		}
		holds = append(holds, h)
	}
	for _, h := range holds {
		if err := h.Err(); err != nil {
			return fail(err)
		}
	}
	return newMultiHold(holds), nil
}

// unlockAll unlocks the holds not yet done, together (one round trip of
// latency), marks those it unlocked, and returns their errors.
func unlockAll(ctx context.Context, holds []*Hold, done []bool) []error {
	errs := make([]error, len(holds))
	var wg sync.WaitGroup
	for i, h := range holds {
		if done[i] {
			continue
		}
		wg.Go(func() { errs[i] = h.Unlock(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil || errors.Is(err, ErrNotHeld) {
			done[i] = true // unlocked, or nothing left to unlock
		}
	}
	return errs
}

// MultiHold is one grant of a MultiLock: a Hold per part. It ends when any
// part is lost, or at Unlock. It is safe for concurrent use.
type MultiHold struct {
	holds  []*Hold
	ctx    context.Context
	cancel context.CancelCauseFunc
	stops  []func() bool

	mu   sync.Mutex
	done []bool // part unlocked (or found not held) by Unlock
}

func newMultiHold(holds []*Hold) *MultiHold {
	ctx, cancel := context.WithCancelCause(context.Background())
	mh := &MultiHold{holds: holds, ctx: ctx, cancel: cancel, done: make([]bool, len(holds))}
	for _, h := range holds {
		hc := h.Context()
		mh.stops = append(mh.stops, context.AfterFunc(hc, func() { cancel(context.Cause(hc)) }))
	}
	return mh
}

// Holds returns the parts' holds, in the order of the MultiLock's Prefixes.
func (m *MultiHold) Holds() []*Hold { return slices.Clone(m.holds) }

// Tokens returns the parts' fencing tokens, in the order of Holds.
func (m *MultiHold) Tokens() []fencing.Token {
	out := make([]fencing.Token, len(m.holds))
	for i, h := range m.holds {
		out[i] = h.Token()
	}
	return out
}

// Done returns a channel closed when any part is lost, or at Unlock.
func (m *MultiHold) Done() <-chan struct{} { return m.ctx.Done() }

// Context returns a context cancelled when any part is lost, or at Unlock;
// context.Cause gives the first lost part's *LostError, or ErrReleased.
func (m *MultiHold) Context() context.Context { return m.ctx }

// Err returns nil while every part is held, the first loss (matching
// ErrLost) once a part is lost, or ErrReleased once unlocked.
func (m *MultiHold) Err() error {
	if m.ctx.Err() == nil {
		return nil
	}
	return context.Cause(m.ctx)
}

// Unlock unlocks every part still held, together, each with its own
// guarded Txn (one round trip of latency); Done closes at once. After a
// part was lost, call it to release the others. It returns nil, or
// ErrNotHeld wrapping the loss when a part was lost or all were already
// unlocked, or the parts' other errors (ctx's cause, etcd's), after which
// Unlock may be retried: it retries only the parts not yet unlocked.
func (m *MultiHold) Unlock(ctx context.Context) error {
	_ = context.Cause(ctx) // a nil ctx panics here, before any change
	m.cancel(ErrReleased)  // a loss already recorded stays the cause
	for _, stop := range m.stops {
		stop()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Contains(m.done, false) {
		return fmt.Errorf("%w: already unlocked", ErrNotHeld)
	}
	errs := unlockAll(ctx, m.holds, m.done)
	var notHeld, other []error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, ErrNotHeld):
			notHeld = append(notHeld, err)
		default:
			other = append(other, err)
		}
	}
	if len(other) > 0 {
		return errors.Join(other...)
	}
	if len(notHeld) > 0 {
		return notHeld[0] // ErrNotHeld wrapping a part's loss
	}
	return nil
}
