package lock

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// Hold is one grant of a lock, semaphore permit or read lock. It is safe for
// concurrent use.
//
// A hold ends when it is unlocked or lost. Loss is reported at the first
// sign: the key deleted (seen by watch), the lease gone, or the lease's
// conservative deadline passed without a renewal. Stop acting on the
// protected resource when Done closes, and fence the resource with Token
// so that a holder paused past its deadline is refused anyway.
type Hold struct {
	h *queue.Hold
}

// Token returns the hold's fencing token: its key and the key's create
// revision. A Mutex's (or an RWMutex writer's) token is greater than the
// token of every earlier hold of the same lock; for read holds and
// semaphore permits, see RWMutex and Semaphore for what a token orders.
func (h *Hold) Token() fencing.Token { return h.h.Token() }

// Done returns a channel closed when the hold is lost or unlocked.
func (h *Hold) Done() <-chan struct{} { return h.h.Done() }

// Context returns a context cancelled when the hold is lost or unlocked.
// context.Cause gives a *LostError (matching ErrLost) or ErrReleased.
func (h *Hold) Context() context.Context { return h.h.Context() }

// Err returns nil while the hold is current, a *LostError (matching ErrLost
// and its cause) once lost, or ErrReleased once unlocked.
func (h *Hold) Err() error { return h.h.Err() }

// Deadline returns when the hold will be presumed lost unless its lease is
// renewed first (renewals move it every TTL/3). After a loss it no longer
// describes this hold.
func (h *Hold) Deadline() time.Time { return h.h.Deadline() }

// Lease returns the ID of the hold's lease.
func (h *Hold) Lease() clientv3.LeaseID { return h.h.Lease() }

// Unlock deletes the hold's key in one Txn, only while its create revision
// is the token's; Done closes at once. It returns nil (also on a retry),
// ErrNotHeld wrapping the loss if the hold was lost or unlocked, or ctx's
// cause, etcd's error or ErrClientClosed, after which Unlock may be retried
// and the key is deleted in the background once etcd answers.
func (h *Hold) Unlock(ctx context.Context) error { return h.h.Release(ctx) }

// run runs fn under the hold and unlocks it; see Mutex.Do.
func (h *Hold) run(ctx context.Context, fn func(context.Context, fencing.Token) error) error {
	return runHeld(ctx, h.Context(), h.Unlock, func(fctx context.Context) error { return fn(fctx, h.Token()) })
}

// runHeld runs fn with a context cancelled when held (a hold's context)
// ends or ctx does, then unlocks on a context of its own bounded by
// CleanupTimeout, and returns fn's error joined with the loss, if held
// was lost, else with unlock's.
func runHeld(ctx, held context.Context, unlock func(context.Context) error, fn func(context.Context) error) error {
	fctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(held, func() { cancel(context.Cause(held)) })
	ferr := fn(fctx)
	stop()
	cancel(nil)
	var lost error
	if held.Err() != nil {
		lost = context.Cause(held)
	}
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), queue.CleanupTimeout)
	defer ucancel()
	uerr := unlock(uctx)
	if errors.Is(lost, ErrLost) {
		return errors.Join(ferr, lost)
	}
	return errors.Join(ferr, uerr)
}
