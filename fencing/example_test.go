package fencing_test

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

// A resource outside etcd keeps a Fence and admits every access, reads as
// well as writes, with the caller's token. A holder whose lock passed to
// someone else while it was paused is refused.
func ExampleFence() {
	var f fencing.Fence
	stale := fencing.Token{Key: "etcdlock/mutex/db/a", Revision: 17}
	current := fencing.Token{Key: "etcdlock/mutex/db/b", Revision: 23}

	fmt.Println(f.Admit("orders", current)) // the current holder writes
	err := f.Admit("orders", stale)         // the paused one wakes up
	fmt.Println(errors.Is(err, fencing.ErrStale))
	fmt.Println(err)
	// Output:
	// <nil>
	// true
	// fencing: stale token 17@etcdlock/mutex/db/a for "orders": highest admitted is 23
}

// Writes into etcd are fenced by Commit: they land only while the hold that
// issued the token is current. After Unlock (or a lost lease), the same
// token's writes are refused and nothing is applied.
func ExampleCommit() {
	cli, stop := integration.StartExample()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	m, err := lock.NewMutex(cli, "ledger")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	h, err := m.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	token := h.Token()
	_, err = fencing.Commit(ctx, cli, token, clientv3.OpPut("ledger/balance", "100"))
	fmt.Println("while held:", err)
	if err := h.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	_, err = fencing.Commit(ctx, cli, token, clientv3.OpPut("ledger/balance", "0"))
	fmt.Println("after unlock:", errors.Is(err, fencing.ErrFenced))
	resp, err := cli.Get(ctx, "ledger/balance")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("balance: %s\n", resp.Kvs[0].Value)
	// Output:
	// while held: <nil>
	// after unlock: true
	// balance: 100
}
