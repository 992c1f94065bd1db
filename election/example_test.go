package election_test

import (
	"context"
	"fmt"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
)

// The main of a controller that runs as several replicas: exactly one does
// the work at a time. Run campaigns, calls Lead while this replica leads,
// and when the context ends (SIGTERM, say) cancels the work, waits for it
// and resigns, so that a standby takes over at once.
func ExampleElection_Run() {
	// In production: clientv3.New(clientv3.Config{Endpoints: ...}).
	cli, stop := integration.StartExample()
	defer stop()

	el, err := election.New(cli, "my-controller", election.WithTTL(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer el.Close()

	// In production: signal.NotifyContext(ctx, syscall.SIGTERM).
	ctx, stop := context.WithCancel(context.Background())
	err = el.Run(ctx, "replica-1", election.Callbacks{
		Lead: func(ctx context.Context, term *election.Term) error {
			fmt.Println("leading")
			// Fence every write with the term's token.
			if _, err := fencing.Commit(ctx, cli, term.Token(), clientv3.OpPut("my-controller/status", "reconciled")); err != nil {
				return err
			}
			stop() // here: the process is asked to stop
			<-ctx.Done()
			fmt.Println("work stopped:", context.Cause(ctx))
			return nil
		},
		OnStoppedLeading: func(term *election.Term, err error) {
			fmt.Println("stopped leading:", term.Err())
		},
	})
	fmt.Println("Run returned:", err)
	// Output:
	// leading
	// work stopped: context canceled
	// stopped leading: election: resigned
	// Run returned: context canceled
}
