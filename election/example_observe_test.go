package election_test

import (
	"context"
	"fmt"
	"log"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
)

// Two candidates: the first leads, Observe reports it, and when it resigns
// the standby leads, in a term with a greater token. Observe reports every
// change, "no leader" (the zero Leader) included.
func ExampleElection_Observe() {
	cli, stop := integration.StartExample()
	defer stop()
	a, err := election.New(cli, "controller")
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := election.New(cli, "controller")
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leaders := b.Observe(ctx)
	first, err := a.Campaign(ctx, "replica-a")
	if err != nil {
		log.Fatal(err)
	}
	for l := range leaders { // skip "no leader" until a leads
		if l.Value != "" {
			fmt.Println("leader:", l.Value)
			break
		}
	}
	terms := make(chan *election.Term, 1)
	go func() {
		t, err := b.Campaign(ctx, "replica-b") // waits behind a
		if err != nil {
			log.Fatal(err)
		}
		terms <- t
	}()
	if err := first.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	second := <-terms
	for l := range leaders { // "no leader" may come between the two
		if l.Value != "" {
			fmt.Println("leader:", l.Value)
			break
		}
	}
	fmt.Println("term grew:", second.Token().Newer(first.Token()))
	if err := second.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// leader: replica-a
	// leader: replica-b
	// term grew: true
}
