package metrics_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
	"github.com/etcdlock/etcdlock/metrics"
)

// printer prints acquires and ends; it embeds Nop for the renewals.
type printer struct {
	metrics.Nop
	mu sync.Mutex
}

func (p *printer) Acquired(ev metrics.AcquireEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Printf("%s %s: %s\n", ev.Kind, ev.Name, ev.Result)
}

func (p *printer) Ended(ev metrics.EndEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Printf("%s %s: %s\n", ev.Kind, ev.Name, ev.Cause)
}

// An Observer of your own: here one that prints what a Mutex reports.
func Example() {
	cli, stop := integration.StartExample() // an embedded etcd server
	defer stop()

	m, err := lock.NewMutex(cli, "reports", lock.WithMetrics(&printer{}))
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()
	h, err := m.Lock(ctx)
	if err != nil {
		panic(err)
	}
	// Another Mutex of the same name (a Mutex does not contend with its
	// own holds: TryLock on m would return ErrHeldBySelf).
	other, err := lock.NewMutex(cli, "reports", lock.WithMetrics(&printer{}))
	if err != nil {
		panic(err)
	}
	defer other.Close()
	if _, err := other.TryLock(ctx); err != nil {
		fmt.Println("TryLock:", err)
	}
	if err := h.Unlock(ctx); err != nil {
		panic(err)
	}
	// Output:
	// mutex reports: granted
	// mutex reports: locked
	// TryLock: lock: held by another holder
	// mutex reports: released
}
