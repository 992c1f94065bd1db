// Package ctxerr tells whether a request failed because its caller's
// context ended.
package ctxerr

import (
	"context"
	"time"
)

// maxLag bounds how long Ended waits for a context whose deadline has
// passed to say so.
const maxLag = time.Second

// Ended returns ctx's cause if ctx has ended, or if its deadline has passed
// though its timer has not fired yet: timers run late on a loaded machine,
// and etcd, told the deadline with the request, may already have answered
// "request timed out". Ended then waits, at most a second, for ctx to end,
// and returns its cause (context.DeadlineExceeded if it has not ended by
// then). Otherwise it returns nil.
func Ended(ctx context.Context) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	dl, ok := ctx.Deadline()
	if !ok || time.Now().Before(dl) {
		return nil
	}
	t := time.NewTimer(maxLag)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return context.DeadlineExceeded
	}
}
