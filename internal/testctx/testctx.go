// Package testctx has contexts for tests of the library's deadline
// handling.
package testctx

import (
	"context"
	"testing"
	"time"
)

// lateTimer is a context whose Deadline is fixed while Done closes later.
type lateTimer struct {
	context.Context
	deadline time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.deadline, true }

// LateTimer returns a context whose timer runs late, as on a loaded
// machine: its Deadline is due after in (a negative in: already passed),
// but Done closes, with context.DeadlineExceeded as its cause, only lag
// later. A request it carries tells etcd the deadline, and etcd may answer
// "request timed out" while the context does not yet say it ended. The
// timer is stopped at tb's cleanup.
func LateTimer(tb testing.TB, in, lag time.Duration) context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	tm := time.AfterFunc(max(in, 0)+lag, func() { cancel(context.DeadlineExceeded) })
	tb.Cleanup(func() { tm.Stop(); cancel(nil) })
	return lateTimer{Context: ctx, deadline: time.Now().Add(in)}
}
