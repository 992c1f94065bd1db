package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/lock"
)

// An Unlock whose request fails (here: its context already ended) must not
// leave the key blocking the lock while the lease is renewed: the holder
// has been told its hold ended and may never retry. The key goes in the
// background, guarded by its revision, and a retried Unlock still succeeds.
func TestFailedUnlockDoesNotWedgeLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "failed-unlock")
	h := mustLock(t, m)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Unlock(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("Unlock with an ended context = %v, want context.Canceled", err)
	}
	// The lease (2 s TTL) is renewed all along: only the background delete
	// can let another client in before this context's 10 s.
	other := e.mutex(e.client(), "failed-unlock")
	h2, err := other.Lock(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("lock wedged after a failed Unlock: %v", err)
	}
	if h2.Token().Revision <= h.Token().Revision {
		t.Fatalf("tokens %v then %v", h.Token(), h2.Token())
	}
	// The retry finds the key gone by its own earlier attempt: success, and
	// the newer hold is untouched.
	if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("retried Unlock = %v, want nil", err)
	}
	if err := h2.Err(); err != nil {
		t.Fatalf("newer hold lost after the retried Unlock: %v", err)
	}
	mustUnlock(t, h2)
}

// Locks on one session keep their own safety margins: the lease's renewal
// probe is shared only by locks with the same margin, and one lock's margin
// that does not fit the session's TTL fails that lock alone.
func TestSessionLocksKeepTheirMargins(t *testing.T) {
	e := newEnv(t)
	s, err := concurrency.NewSession(e.cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bad := e.mutex(e.cli, "bad", lock.WithSession(s), lock.WithSafetyMargin(6*time.Second))
	if _, err := bad.Lock(ctxT(t, 10*time.Second)); !errors.Is(err, lock.ErrInvalidOption) {
		t.Fatalf("Lock with a margin over half the session's TTL = %v, want ErrInvalidOption", err)
	}
	byDefault := e.mutex(e.cli, "default", lock.WithSession(s)) // TTL/5: 2 s
	wide := e.mutex(e.cli, "wide", lock.WithSession(s), lock.WithSafetyMargin(4*time.Second))
	t0 := time.Now()
	hd := mustLock(t, byDefault)
	hw := mustLock(t, wide)
	took := time.Since(t0)
	// Each deadline is the send time of a renewal, sent between t0 and now,
	// plus the TTL minus the lock's margin: 2 s apart, give or take took.
	// One keeper for both would put them 0 s apart.
	if gap := hd.Deadline().Sub(hw.Deadline()); gap < 2*time.Second-took {
		t.Errorf("deadline with a 2s margin %v, with 4s %v (locks took %v): want the second about 2s earlier", hd.Deadline(), hw.Deadline(), took)
	}
	mustUnlock(t, hd)
	mustUnlock(t, hw)
}

// An explicit safety margin of zero is refused: it would trust clocks and
// network to the nanosecond.
func TestZeroMarginRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := lock.NewMutex(e.cli, "x", lock.WithNamespace(e.ns), lock.WithSafetyMargin(0)); !errors.Is(err, lock.ErrInvalidOption) {
		t.Fatalf("NewMutex with a zero margin = %v, want ErrInvalidOption", err)
	}
}
