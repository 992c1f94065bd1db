// Package backoff is the retry pause of etcdlock: a pause that doubles
// from its first value up to a cap, and a sleep that ends with its context.
package backoff

import (
	"context"
	"time"
)

// Backoff is a doubling pause. It is not safe for concurrent use: each
// retry loop owns one.
type Backoff struct {
	first, max, next time.Duration
}

// New returns a Backoff whose first pause is first, doubling up to max.
func New(first, max time.Duration) *Backoff {
	return &Backoff{first: first, max: max, next: first}
}

// Next returns the pause the next Sleep waits.
func (b *Backoff) Next() time.Duration { return b.next }

// Reset makes the next pause the first again.
func (b *Backoff) Reset() { b.next = b.first }

// Sleep waits for the next pause, then doubles it (up to the cap). It
// returns nil, or ctx's cause if ctx ends first.
func (b *Backoff) Sleep(ctx context.Context) error {
	d := b.next
	b.next = min(b.next*2, b.max)
	return Sleep(ctx, d)
}

// Sleep waits for d, and returns nil, or ctx's cause if ctx ends first
// (at once if it has ended; d <= 0 waits for nothing).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
