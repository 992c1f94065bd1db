package election_test

import (
	"context"
	"fmt"
	"log"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
)

// A rolling upgrade asks the leader to step down before it stops its
// process ("etcdlock revoke --election my-controller" does the same), so
// that a standby takes over at a moment of the leader's choosing rather
// than after the process is killed. In Run, the leader returns from Lead;
// Run resigns and campaigns again, behind the standbys.
func ExampleTerm_ResignRequested() {
	cli, stop := integration.StartExample()
	defer stop()

	el, err := election.New(cli, "my-controller")
	if err != nil {
		log.Fatal(err)
	}
	defer el.Close()

	ctx, stop := context.WithCancel(context.Background())
	err = el.Run(ctx, "replica-1", election.Callbacks{
		Lead: func(ctx context.Context, term *election.Term) error {
			// Elsewhere: the upgrade asks the leader to step down.
			l, err := election.RequestResign(ctx, cli, election.DefaultNamespace, "my-controller", "upgrade")
			if err != nil {
				return err
			}
			fmt.Println("asked", l.Value)
			select {
			case <-term.ResignRequested():
				fmt.Println("stepping down")
			case <-ctx.Done():
			}
			return nil
		},
		OnStoppedLeading: func(term *election.Term, err error) {
			fmt.Println("stopped leading:", term.Err())
			stop() // here: the process stops after stepping down
		},
	})
	fmt.Println("Run returned:", err)
	// Output:
	// asked replica-1
	// stepping down
	// stopped leading: election: resigned
	// Run returned: context canceled
}
