package lock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// A report that every replica of a service is scheduled to send each hour,
// to be sent once an hour: each replica tries the lock when its schedule
// fires, and the one that gets it sends the report and unlocks. WithMinHold
// keeps the name taken for 50 minutes anyway, so a replica whose schedule
// fires late (a clock a second behind, a slow start) finds it taken and
// skips; WithMaxHold frees it after 55 minutes even if the sender hangs.
func ExampleWithMinHold() {
	cli, stop := integration.StartExample()
	defer stop()
	ctx := context.Background()

	replica := func(name string) {
		m, err := lock.NewMutex(cli, "hourly-report", lock.WithMinHold(50*time.Minute), lock.WithMaxHold(55*time.Minute))
		if err != nil {
			log.Fatal(err)
		}
		defer m.Close()
		h, err := m.TryLock(ctx)
		if errors.Is(err, lock.ErrLocked) {
			fmt.Println(name, "skips: sent this period")
			return
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(name, "sends the report")
		if err := h.Unlock(ctx); err != nil { // the name stays taken for the rest of 50 minutes
			log.Fatal(err)
		}
	}
	replica("replica-1")
	replica("replica-2") // a second later
	// Output:
	// replica-1 sends the report
	// replica-2 skips: sent this period
}
