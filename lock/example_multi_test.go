package lock_test

import (
	"context"
	"fmt"
	"log"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// A transfer between two accounts takes both accounts' locks and one of
// four permits of the payment gateway, all or nothing. Two transfers naming
// the accounts in opposite orders cannot deadlock: a MultiLock always
// acquires its parts in the order of their key prefixes.
func ExampleMultiLock() {
	cli, stop := integration.StartExample()
	defer stop()

	bob, err := lock.NewMutex(cli, "account/bob")
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()
	alice, err := lock.NewMutex(cli, "account/alice")
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close()
	gateway, err := lock.NewSemaphore(cli, "gateway", 4)
	if err != nil {
		log.Fatal(err)
	}
	defer gateway.Close()

	ml, err := lock.NewMultiLock(lock.MutexPart(bob), lock.MutexPart(alice), lock.PermitsPart(gateway, 1))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("order:", ml.Prefixes())
	err = ml.Do(context.Background(), func(ctx context.Context, tokens []fencing.Token) error {
		fmt.Println("holding", len(tokens), "locks")
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// order: [etcdlock/mutex/account%2Falice/ etcdlock/mutex/account%2Fbob/ etcdlock/sem/gateway/]
	// holding 3 locks
	// done: <nil>
}
