package lock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// A holder that vanishes without unlocking (here its lease is revoked, as
// when its machine dies and the lease expires) keeps the lock from the next
// holder for the lock-delay, so that its writes still in flight drain; a
// clean Unlock hands the lock on at once.
func ExampleWithLockDelay() {
	cli, stop := integration.StartExample()
	defer stop()
	ctx := context.Background()
	const delay = 2 * time.Second

	newMutex := func() *lock.Mutex {
		m, err := lock.NewMutex(cli, "ledger", lock.WithLockDelay(delay))
		if err != nil {
			log.Fatal(err)
		}
		return m
	}
	a, b := newMutex(), newMutex()
	defer a.Close()
	defer b.Close()

	queued := func(n int) { // waits until n keys are in the lock's queue
		for {
			st, err := lock.Inspect(ctx, cli, lock.DefaultNamespace, "ledger")
			if err != nil {
				log.Fatal(err)
			}
			if len(st.Lock(lock.KindMutex).Keys) == n {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	lockLater := func(m *lock.Mutex) <-chan *lock.Hold {
		c := make(chan *lock.Hold, 1)
		go func() {
			h, err := m.Lock(ctx)
			if err != nil {
				log.Fatal(err)
			}
			c <- h
		}()
		return c
	}

	h, err := a.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	bHolds := lockLater(b)
	queued(2)
	lost := time.Now()
	if _, err := cli.Revoke(ctx, h.Lease()); err != nil { // a's holder vanishes
		log.Fatal(err)
	}
	h2 := <-bHolds
	fmt.Println("after the unclean loss, b waited the delay:", time.Since(lost) >= delay)

	aHolds := lockLater(a)
	queued(2)
	unlocked := time.Now()
	if err := h2.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	h3 := <-aHolds
	fmt.Println("after b's clean Unlock, a waited the delay:", time.Since(unlocked) >= delay)
	if err := h3.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// after the unclean loss, b waited the delay: true
	// after b's clean Unlock, a waited the delay: false
}

// A fleet moving from etcd's concurrency.Mutex (or "etcdctl lock") to
// etcdlock: the new processes take the same lock, in etcd's key layout,
// and the old and the new exclude each other, in the order they asked.
func ExampleNewEtcdMutex() {
	cli, stop := integration.StartExample()
	defer stop()
	ctx := context.Background()

	// An old process, on etcd's recipe.
	s, err := concurrency.NewSession(cli)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	old := concurrency.NewMutex(s, "/jobs/migrate")
	if err := old.Lock(ctx); err != nil {
		log.Fatal(err)
	}

	// A new process.
	m, err := lock.NewEtcdMutex(cli, "/jobs/migrate")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	_, err = m.TryLock(ctx)
	fmt.Println("while the old process holds:", errors.Is(err, lock.ErrLocked))

	if err := old.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	h, err := m.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("key in etcd's layout:", strings.HasPrefix(h.Token().Key, "/jobs/migrate/"))
	if err := old.TryLock(ctx); errors.Is(err, concurrency.ErrLocked) {
		fmt.Println("the old process now waits for the new")
	}
	if err := h.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// while the old process holds: true
	// key in etcd's layout: true
	// the old process now waits for the new
}
