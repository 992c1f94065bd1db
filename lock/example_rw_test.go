package lock_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// Readers share the lock; a writer holds it alone. A writer's token is
// above every token granted before it, so the resource can refuse a stale
// holder of either kind.
func ExampleRWMutex() {
	srv, err := integration.StartServer(integration.WithoutFsync())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	cli, err := srv.NewClient()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	ctx := context.Background()

	m, err := lock.NewRWMutex(cli, "config")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	r1, err := m.RLock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	r2, err := m.RLock(ctx) // a second reader gets in at once
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = m.TryLock(ctx)
	fmt.Println("writer while readers hold:", errors.Is(err, lock.ErrLocked))
	if err := r1.Unlock(ctx); err != nil {
		fmt.Println(err)
	}
	if err := r2.Unlock(ctx); err != nil {
		fmt.Println(err)
	}

	err = m.Do(ctx, func(ctx context.Context, token fencing.Token) error {
		fmt.Println("writer's token above the readers':", token.Newer(r1.Token()) && token.Newer(r2.Token()))
		return nil
	})
	fmt.Println("write done:", err)
	// Output:
	// writer while readers hold: true
	// writer's token above the readers': true
	// write done: <nil>
}

// A pool of 3 permits shared by jobs of different sizes. A large request at
// the head of the queue is not overtaken by smaller ones behind it.
func ExampleSemaphore() {
	srv, err := integration.StartServer(integration.WithoutFsync())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	cli, err := srv.NewClient()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	ctx := context.Background()

	s, err := lock.NewSemaphore(cli, "gpu", 3)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	small, err := s.Acquire(ctx, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	big, err := s.TryAcquire(ctx, 2) // 1 + 2 fit in 3
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = s.TryAcquire(ctx, 1)
	fmt.Println("a fourth permit:", errors.Is(err, lock.ErrLocked))
	for _, h := range []*lock.Hold{small, big} {
		if err := h.Unlock(ctx); err != nil {
			fmt.Println(err)
		}
	}

	// Opened elsewhere with another limit: refused, not silently counted.
	other, err := lock.NewSemaphore(cli, "gpu", 4)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer other.Close()
	h, err := s.Acquire(ctx, 3)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = other.Acquire(ctx, 1)
	var lm *lock.LimitMismatchError
	if errors.As(err, &lm) {
		fmt.Println("limit mismatch: mine", lm.Limit, "stored", lm.Stored)
	}
	if err := h.Unlock(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// a fourth permit: true
	// limit mismatch: mine 4 stored 3
}

// A resource guarded by an RWMutex admits each access with its hold's
// token: a reader is refused once a newer writer has written, a writer once
// any newer hold has acted.
func ExampleRWFence() {
	var f lock.RWFence
	reader := fencing.Token{Key: "etcdlock/rw/db/r/a", Revision: 10}
	writer := fencing.Token{Key: "etcdlock/rw/db/w/b", Revision: 12}
	later := fencing.Token{Key: "etcdlock/rw/db/r/c", Revision: 15}

	fmt.Println(f.AdmitRead("orders", reader))  // a reader reads
	fmt.Println(f.AdmitWrite("orders", writer)) // then a writer writes
	fmt.Println(f.AdmitRead("orders", later))   // a reader after it
	err := f.AdmitRead("orders", reader)        // the first reader, paused, resumes
	fmt.Println(errors.Is(err, fencing.ErrStale))
	err = f.AdmitWrite("orders", writer) // the writer, after a newer reader read
	fmt.Println(errors.Is(err, fencing.ErrStale))
	// Output:
	// <nil>
	// <nil>
	// <nil>
	// true
	// true
}
