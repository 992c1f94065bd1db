package ctxerr

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/etcdlock/etcdlock/internal/testctx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEnded(t *testing.T) {
	if err := Ended(context.Background()); err != nil {
		t.Fatalf("Ended(no deadline) = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := Ended(ctx); err != nil {
		t.Fatalf("Ended(deadline to come) = %v", err)
	}
	why := errors.New("why")
	done, stop := context.WithCancelCause(context.Background())
	stop(why)
	if err := Ended(done); err != why {
		t.Fatalf("Ended(cancelled) = %v, want its cause", err)
	}
	// Deadline passed, timer late: Ended waits for the context's cause.
	if err := Ended(testctx.LateTimer(t, -time.Millisecond, 20*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ended(deadline passed, timer late) = %v, want context.DeadlineExceeded", err)
	}
}
