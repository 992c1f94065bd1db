package lock

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/internal/queue"
)

// recordDeleted has a hold of a Mutex with lock-delay record its own loss
// when it sees its key deleted by another client: the waiter behind, if
// any, records it too, but a lock that nobody waits for would otherwise
// let the next acquirer in at once. The delay counts from when the hold
// saw the delete. A Grant and a Txn, on that path only, on a context
// bounded by queue.CleanupTimeout; Close waits for it.
func recordDeleted(p *queue.Primitive, h *queue.Hold) {
	d := p.Q.LockDelay()
	if d == 0 {
		return
	}
	context.AfterFunc(h.Context(), func() {
		if !errors.Is(context.Cause(h.Context()), ErrDeleted) {
			return
		}
		seen := time.Now()
		done, ok := p.Track()
		if !ok {
			return
		}
		defer done()
		ctx, cancel := context.WithTimeout(context.Background(), queue.CleanupTimeout)
		defer cancel()
		if _, err := p.Q.RecordLoss(ctx, 0, d-time.Since(seen), queue.Entry{Key: h.Token().Key, Rev: h.Token().Revision}); err != nil {
			p.Cfg.Logger.Warn("lock-delay: could not record the loss of a deleted key", zap.Stringer("token", h.Token()), zap.Error(err))
		}
	})
}
