package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/lock"
)

// An early Unlock under WithMinHold keeps the key, with its token, on a
// lease of its own: others are refused until the minimum has passed, even
// after the holder's Mutex closed (its lease revoked), and the next holder
// gets a newer token.
func TestMinHoldKeepsNameAfterEarlyUnlock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const min = 2 * time.Second
	first := e.mutex(e.client(), "cron", lock.WithTTL(2*time.Second), lock.WithMinHold(min))
	h, err := first.TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	taken := time.Now() // after the grant
	if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("early Unlock: %v", err)
	}
	if !errors.Is(h.Err(), lock.ErrReleased) {
		t.Fatalf("Err after Unlock = %v, want ErrReleased", h.Err())
	}
	resp, err := e.cli.Get(ctxT(t, 5*time.Second), h.Token().Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != h.Token().Revision || resp.Kvs[0].Lease == int64(h.Lease()) {
		t.Fatalf("after an early Unlock the key is %v, want it kept with its create revision on another lease", resp.Kvs)
	}
	if err := first.Close(); err != nil { // as if the process exited
		t.Fatal(err)
	}
	other := e.mutex(e.cli, "cron")
	if _, err := other.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock within the minimum = %v, want ErrLocked", err)
	}
	next, err := other.Lock(ctxT(t, 15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if held := time.Since(taken); held < min {
		t.Fatalf("the next holder got the lock %v after the first took it, less than the minimum %v", held, min)
	}
	if !next.Token().Newer(h.Token()) {
		t.Fatalf("next token %v not newer than %v", next.Token(), h.Token())
	}
	mustUnlock(t, next)
}

// After the minimum, Unlock deletes the key as usual; an Unlock whose
// context ended returns its cause and the key still goes.
func TestMinHoldPassedAndEndedContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "job", lock.WithTTL(2*time.Second), lock.WithMinHold(300*time.Millisecond))
	h := mustLock(t, m)
	time.Sleep(400 * time.Millisecond) // past the minimum
	mustUnlock(t, h)
	resp, err := e.cli.Get(ctxT(t, 5*time.Second), m.Prefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if n := resp.Count; n != 0 {
		t.Fatalf("%d keys after an Unlock past the minimum, want 0", n)
	}
	h = mustLock(t, m)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Unlock(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("Unlock(ended) = %v, want context.Canceled", err)
	}
	waitKeys(t, e.cli, m.Prefix(), 0)
}

// WithMaxHold releases a hold its holder never unlocks, reports the loss,
// and lets the next holder in.
func TestMaxHoldReleases(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "job", lock.WithTTL(2*time.Second), lock.WithMaxHold(time.Second))
	h := mustLock(t, m)
	waiter := make(chan error, 1)
	go func() {
		w, err := e.mutex(e.client(), "job").Lock(ctxT(t, 15*time.Second))
		if err == nil {
			err = w.Unlock(ctxT(t, 5*time.Second))
		}
		waiter <- err
	}()
	waitClosed(t, h.Done(), 10*time.Second, "Done at the maximum hold")
	if err := h.Err(); !errors.Is(err, lock.ErrLost) || !errors.Is(err, lock.ErrMaxHold) {
		t.Fatalf("Err = %v, want ErrLost and ErrMaxHold", err)
	}
	if err := <-waiter; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if err := h.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) || !errors.Is(err, lock.ErrMaxHold) {
		t.Fatalf("Unlock after the maximum = %v, want ErrNotHeld wrapping ErrMaxHold", err)
	}
	// Unlocked in time, the timer does nothing.
	h = mustLock(t, m)
	mustUnlock(t, h)
}

// An Unlock that meets the maximum hold's timer agrees with the hold's
// state: nil only if the hold ended as unlocked (ErrReleased), else
// ErrNotHeld wrapping ErrMaxHold, the loss Err reports. Unlock right after
// Done closed (the timer's delete not yet sent, or sent and not yet
// answered) must say the hold was lost.
func TestMaxHoldUnlockRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const max = 30 * time.Millisecond
	m := e.mutex(e.cli, "job", lock.WithTTL(5*time.Second), lock.WithMaxHold(max))
	const rounds = 20
	for i := 0; i < rounds; i++ {
		h := mustLock(t, m)
		waitClosed(t, h.Done(), 10*time.Second, "Done at the maximum hold")
		if err := h.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) || !errors.Is(err, lock.ErrMaxHold) {
			t.Fatalf("round %d: Unlock right after Done = %v, want ErrNotHeld wrapping ErrMaxHold", i, err)
		}
	}
	var released, expired int
	for i := 0; i < rounds; i++ {
		h := mustLock(t, m)
		// Not a wait for an event: the sleep puts the Unlock around the
		// timer's firing, a little later each round.
		time.Sleep(max - 5*time.Millisecond + time.Duration(i)*500*time.Microsecond)
		err := h.Unlock(ctxT(t, 5*time.Second))
		state := h.Err()
		switch {
		case err == nil && errors.Is(state, lock.ErrReleased):
			released++
		case errors.Is(err, lock.ErrNotHeld) && errors.Is(err, lock.ErrMaxHold) && errors.Is(state, lock.ErrMaxHold):
			expired++
		default:
			t.Fatalf("round %d: Unlock = %v with Err = %v: they disagree", i, err, state)
		}
	}
	t.Logf("racing Unlock: %d unlocked, %d ended by the maximum", released, expired)
}

func TestHoldBoundsBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, opts := range [][]lock.Option{
		{lock.WithMinHold(0)},
		{lock.WithMinHold(-time.Second)},
		{lock.WithMaxHold(0)},
		{lock.WithMinHold(2 * time.Second), lock.WithMaxHold(time.Second)},
	} {
		if _, err := lock.NewMutex(e.cli, "x", opts...); !errors.Is(err, lock.ErrInvalidOption) {
			t.Errorf("NewMutex with %d bound options = %v, want ErrInvalidOption", len(opts), err)
		}
	}
}
