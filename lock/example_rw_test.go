package lock_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// Readers share an RWMutex; a writer waits for them, and its token is
// greater than theirs, so a resource can refuse reads older than the last
// write.
func ExampleRWMutex() {
	cli, stop := integration.StartExample()
	defer stop()
	m, err := lock.NewRWMutex(cli, "config")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	ctx := context.Background()
	r1, err := m.RLock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	r2, err := m.RLock(ctx) // readers hold together
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.TryLock(ctx)
	fmt.Println("writer while reading:", errors.Is(err, lock.ErrLocked))
	for _, r := range []*lock.Hold{r1, r2} {
		if err := r.Unlock(ctx); err != nil {
			log.Fatal(err)
		}
	}
	w, err := m.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("write token newer:", w.Token().Newer(r2.Token()))
	if err := w.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// writer while reading: true
	// write token newer: true
}

// A Semaphore of 3 permits: a request for 2 fits beside 1, not beside 2.
// Opening it with another limit is an error, not a second count.
func ExampleSemaphore() {
	cli, stop := integration.StartExample()
	defer stop()
	s, err := lock.NewSemaphore(cli, "gpus", 3)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ctx := context.Background()
	two, err := s.Acquire(ctx, 2)
	if err != nil {
		log.Fatal(err)
	}
	_, err = s.TryAcquire(ctx, 2)
	fmt.Println("2 more:", errors.Is(err, lock.ErrLocked))
	one, err := s.TryAcquire(ctx, 1)
	fmt.Println("1 more:", err)

	other, err := lock.NewSemaphore(cli, "gpus", 4)
	if err != nil {
		log.Fatal(err)
	}
	defer other.Close()
	_, err = other.TryAcquire(ctx, 1)
	fmt.Println("opened with 4:", errors.Is(err, lock.ErrLimitMismatch))

	for _, h := range []*lock.Hold{one, two} {
		if err := h.Unlock(ctx); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// 2 more: true
	// 1 more: <nil>
	// opened with 4: true
}
