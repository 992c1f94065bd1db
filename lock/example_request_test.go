package lock_test

import (
	"context"
	"fmt"
	"log"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// A long job holds a lock; another process (here an operator, as with
// "etcdlock revoke reindex") asks it to give the lock up. The job finishes
// its current step and unlocks; it could also ignore the request.
func ExampleHold_ReleaseRequested() {
	cli, stop := integration.StartExample()
	defer stop()
	ctx := context.Background()

	m, err := lock.NewMutex(cli, "reindex", lock.WithHolder("worker-7"))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	h, err := m.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}

	// Elsewhere: ask whoever holds "reindex" to release.
	asked, err := lock.RequestRelease(ctx, cli, lock.DefaultNamespace, lock.KindMutex, "reindex", "operator")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("asked the holder of token", asked[0].Revision == h.Token().Revision)

	select {
	case <-h.ReleaseRequested():
		fmt.Println("release requested: stopping after this step")
	case <-h.Done():
		log.Fatal(h.Err())
	}
	if err := h.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// asked the holder of token true
	// release requested: stopping after this step
}
