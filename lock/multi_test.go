package lock_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/lock"
)

func (e *env) multi(parts ...lock.Part) *lock.MultiLock {
	e.t.Helper()
	m, err := lock.NewMultiLock(parts...)
	if err != nil {
		e.t.Fatalf("NewMultiLock: %v", err)
	}
	return m
}

// Two callers take the same three locks (a Mutex, an RWMutex's write side
// and one permit of a one-permit Semaphore), each naming them in the
// opposite order, for many rounds. Taken in the order given, they would
// deadlock (each holding one and waiting for the other's); taken in the
// canonical order, every round finishes, and no two rounds overlap.
func TestMultiLockReversedOrdersNeverDeadlock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const rounds = 25
	var inside atomic.Int32
	var overlaps atomic.Int32
	last := make([]fencing.Token, 3) // by part, in the canonical order
	run := func(cli *clientv3.Client, reverse bool) error {
		parts := []lock.Part{
			lock.MutexPart(e.mutex(cli, "a")),
			lock.WritePart(e.rwmutex(cli, "b")),
			lock.PermitsPart(e.semaphore(cli, "c", 1), 1),
		}
		if reverse {
			slices.Reverse(parts)
		}
		ml := e.multi(parts...)
		for range rounds {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := ml.Do(ctx, func(_ context.Context, tokens []fencing.Token) error {
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				for i, tok := range tokens { // inside: no other writer
					if !last[i].IsZero() && !tok.Newer(last[i]) {
						overlaps.Add(1)
					}
					last[i] = tok
				}
				inside.Add(-1)
				return nil
			})
			cancel()
			if err != nil {
				return err
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		cli := e.client()
		wg.Go(func() { errs[i] = run(cli, i == 1) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v (a deadlock ends in the context's deadline)", i, err)
		}
	}
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d overlapping or out-of-order grants", n)
	}
}

// A context that ends while the second part waits leaves nothing held:
// the first part is unlocked and no key of the MultiLock is left.
func TestMultiLockCancelWhileSecondPartWaits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	first, second := e.mutex(cli, "first"), e.mutex(cli, "second")
	blocker := mustLock(t, e.mutex(e.cli, "second"))
	ml := e.multi(lock.MutexPart(second), lock.MutexPart(first)) // order given: second, first
	if got, want := ml.Prefixes(), []string{first.Prefix(), second.Prefix()}; !slices.Equal(got, want) {
		t.Fatalf("Prefixes = %q, want %q", got, want)
	}
	cause := errors.New("operator gave up")
	ctx, cancel := context.WithCancelCause(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := ml.Lock(ctx)
		res <- err
	}()
	waitKeys(t, e.cli, second.Prefix(), 2) // the MultiLock waits behind blocker
	waitKeys(t, e.cli, first.Prefix(), 1)  // and holds first
	cancel(cause)
	if err := <-res; !errors.Is(err, cause) {
		t.Fatalf("Lock = %v, want the context's cause", err)
	}
	waitKeys(t, e.cli, first.Prefix(), 0)
	waitKeys(t, e.cli, second.Prefix(), 1) // blocker's only
	h, err := first.TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("first is still held after the failed Lock: %v", err)
	}
	mustUnlock(t, h)
	mustUnlock(t, blocker)
}

// TryLock gives up at the first part that would wait, and unlocks the
// parts it took.
func TestMultiLockTryLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli := e.client()
	a, b := e.mutex(cli, "a"), e.rwmutex(cli, "b")
	ml := e.multi(lock.MutexPart(a), lock.ReadPart(b))
	writer, err := e.rwmutex(e.cli, "b").Lock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ml.TryLock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock with b write-held = %v, want ErrLocked", err)
	}
	waitKeys(t, e.cli, a.Prefix(), 0)
	mustUnlock(t, writer)
	mh, err := ml.TryLock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatalf("TryLock of free locks: %v", err)
	}
	toks := mh.Tokens()
	if len(toks) != 2 || toks[0] != mh.Holds()[0].Token() || toks[1].Key[:len(b.Prefix())] != b.Prefix() {
		t.Fatalf("Tokens = %v, want a's then b's", toks)
	}
	if err := mh.Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := mh.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("second Unlock = %v, want ErrNotHeld", err)
	}
	if !errors.Is(mh.Err(), lock.ErrReleased) {
		t.Fatalf("Err after Unlock = %v, want ErrReleased", mh.Err())
	}
}

// The loss of one part ends the MultiHold; Unlock then releases the
// others and reports the loss.
func TestMultiHoldPartLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, s := e.mutex(e.cli, "a"), e.semaphore(e.cli, "s", 3)
	mh, err := e.multi(lock.PermitsPart(s, 2), lock.MutexPart(a)).Lock(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	victim := mh.Holds()[1].Token() // "sem/..." sorts after "mutex/..."
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), victim.Key); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, mh.Done(), 10*time.Second, "Done after a part's key was deleted")
	if err := mh.Err(); !errors.Is(err, lock.ErrLost) || !errors.Is(err, lock.ErrDeleted) {
		t.Fatalf("Err = %v, want ErrLost and ErrDeleted", err)
	}
	if err := mh.Unlock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrNotHeld) || !errors.Is(err, lock.ErrLost) {
		t.Fatalf("Unlock = %v, want ErrNotHeld wrapping the loss", err)
	}
	waitKeys(t, e.cli, a.Prefix(), 0)
}

func TestMultiLockBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.mutex(e.cli, "m")
	rw := e.rwmutex(e.cli, "rw")
	s := e.semaphore(e.cli, "s", 2)
	for _, c := range []struct {
		name  string
		parts []lock.Part
		want  error
	}{
		{"none", nil, lock.ErrInvalidOption},
		{"zero part", []lock.Part{{}}, lock.ErrInvalidOption},
		{"nil mutex", []lock.Part{lock.MutexPart(nil)}, lock.ErrInvalidOption},
		{"nil rwmutex", []lock.Part{lock.ReadPart(nil)}, lock.ErrInvalidOption},
		{"nil semaphore", []lock.Part{lock.PermitsPart(nil, 1)}, lock.ErrInvalidOption},
		{"no permits", []lock.Part{lock.PermitsPart(s, 0)}, lock.ErrInvalidPermits},
		{"too many permits", []lock.Part{lock.PermitsPart(s, 3)}, lock.ErrInvalidPermits},
		{"mutex twice", []lock.Part{lock.MutexPart(m), lock.MutexPart(m)}, lock.ErrDuplicateLock},
		{"same name twice", []lock.Part{lock.MutexPart(m), lock.MutexPart(e.mutex(e.client(), "m"))}, lock.ErrDuplicateLock},
		{"read and write", []lock.Part{lock.ReadPart(rw), lock.WritePart(rw)}, lock.ErrDuplicateLock},
	} {
		if _, err := lock.NewMultiLock(c.parts...); !errors.Is(err, c.want) {
			t.Errorf("%s: NewMultiLock = %v, want %v", c.name, err, c.want)
		}
	}
	// Same name, different kinds: different locks.
	ml := e.multi(lock.MutexPart(e.mutex(e.cli, "x")), lock.ReadPart(e.rwmutex(e.cli, "x")))

	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ml.Lock(ended); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock(ended) = %v, want context.Canceled", err)
	}

	// A closed part fails the Lock after the parts before it were taken;
	// they are unlocked.
	closed := e.mutex(e.cli, "z")
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	first := e.mutex(e.cli, "a")
	if _, err := e.multi(lock.MutexPart(closed), lock.MutexPart(first)).Lock(ctxT(t, 5*time.Second)); !errors.Is(err, lock.ErrClosed) {
		t.Errorf("Lock with a closed part = %v, want ErrClosed", err)
	}
	waitKeys(t, e.cli, first.Prefix(), 0)
}

// A part lost while a later part waits fails the Lock with that loss, once
// the later part is granted, and leaves nothing held.
func TestMultiLockPartLostWhileWaiting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lost := make(chan struct{})
	var once sync.Once
	obs, _ := observer.New(zap.WarnLevel)
	core := zapcore.RegisterHooks(obs, func(en zapcore.Entry) error {
		if en.Message == "hold lost" {
			once.Do(func() { close(lost) })
		}
		return nil
	})
	cli := e.client()
	first := e.mutex(cli, "first", lock.WithTTL(2*time.Second), lock.WithLogger(zap.New(core)))
	second := e.mutex(cli, "second")
	blocker := mustLock(t, e.mutex(e.cli, "second"))
	res := make(chan error, 1)
	go func() {
		_, err := e.multi(lock.MutexPart(first), lock.MutexPart(second)).Lock(ctxT(t, 20*time.Second))
		res <- err
	}()
	waitKeys(t, e.cli, second.Prefix(), 2) // first held, second waiting
	resp, err := e.cli.Get(ctxT(t, 5*time.Second), first.Prefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("first's keys: %v, %v", resp, err)
	}
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), string(resp.Kvs[0].Key)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, lost, 10*time.Second, "first's loss")
	mustUnlock(t, blocker)
	if err := <-res; !errors.Is(err, lock.ErrLost) || !errors.Is(err, lock.ErrDeleted) {
		t.Fatalf("Lock = %v, want the first part's loss", err)
	}
	waitKeys(t, e.cli, second.Prefix(), 0)
}
