package lock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// A worker takes the lock, does its work with the hold's context and token,
// and unlocks. The work's writes to etcd are fenced by the token, so they
// land only while the hold is current.
func ExampleMutex_Do() {
	// In production: clientv3.New(clientv3.Config{Endpoints: ...}).
	cli, stop := integration.StartExample()
	defer stop()

	m, err := lock.NewMutex(cli, "reports/daily")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	err = m.Do(context.Background(), func(ctx context.Context, token fencing.Token) error {
		fmt.Println("holding the lock")
		// Fenced write: applied only if this hold is still current.
		_, err := fencing.Commit(ctx, cli, token, clientv3.OpPut("reports/daily/last", "2026-11-26"))
		return err
	})
	fmt.Println("done:", err)
	// Output:
	// holding the lock
	// done: <nil>
}

// Lock returns a Hold. Watch its Done channel (or use its Context) while
// working: it closes at the first sign the hold may be lost.
func ExampleMutex_Lock() {
	cli, stop := integration.StartExample()
	defer stop()

	m, err := lock.NewMutex(cli, "migrations")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	ctx := context.Background()
	first, err := m.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.TryLock(ctx) // a second holder must wait, even through m
	fmt.Println("second:", err, errors.Is(err, lock.ErrLocked))
	if err := first.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	second, err := m.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("token grew:", second.Token().Newer(first.Token()))
	fmt.Println("first's context:", context.Cause(first.Context()))
	if err := second.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// second: lock: held by this Mutex: a hold it granted is not unlocked (a Mutex is not reentrant) true
	// token grew: true
	// first's context: lock: released
}

// Inspect shows who holds a lock and who waits for it, as the lock's own
// rules decide: here a Mutex held by one host while another waits. The
// answer is a snapshot, for display and monitoring, not for deciding who may
// act.
func ExampleInspect() {
	cli, stop := integration.StartExample()
	defer stop()
	ctx := context.Background()

	a, err := lock.NewMutex(cli, "backup", lock.WithHolder("host-a"))
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := lock.NewMutex(cli, "backup", lock.WithHolder("host-b"))
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	h, err := a.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	waitCtx, stopWaiting := context.WithCancel(ctx)
	waited := make(chan error)
	go func() {
		_, err := b.Lock(waitCtx)
		waited <- err
	}()

	var st *lock.Snapshot
	for { // until host-b's key is queued
		if st, err = lock.Inspect(ctx, cli, lock.DefaultNamespace, "backup"); err != nil {
			log.Fatal(err)
		}
		if len(st.Lock(lock.KindMutex).Keys) == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, q := range st.Locks {
		for _, e := range q.Keys {
			state := "waiting"
			if e.Holding {
				state = "holding"
			}
			fmt.Println(q.Kind, e.Holder, state)
		}
	}

	stopWaiting()
	fmt.Println("host-b:", <-waited)
	if err := h.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// mutex host-a holding
	// mutex host-b waiting
	// host-b: context canceled
}
