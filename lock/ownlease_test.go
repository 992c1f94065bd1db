package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/lock"
)

// acquirer names one way of taking a hold of a primitive that grants its
// own lease.
type acquirer struct {
	name string
	// open builds the primitive (closed at cleanup) and returns its
	// acquire and its Close.
	open func(e *env, cli *clientv3.Client, name string) (acquire func(context.Context) (*lock.Hold, error), close func() error)
}

func acquirers() []acquirer {
	mutex := func(try bool) func(*env, *clientv3.Client, string) (func(context.Context) (*lock.Hold, error), func() error) {
		return func(e *env, cli *clientv3.Client, name string) (func(context.Context) (*lock.Hold, error), func() error) {
			m := e.mutex(cli, name)
			if try {
				return m.TryLock, m.Close
			}
			return m.Lock, m.Close
		}
	}
	rw := func(read bool) func(*env, *clientv3.Client, string) (func(context.Context) (*lock.Hold, error), func() error) {
		return func(e *env, cli *clientv3.Client, name string) (func(context.Context) (*lock.Hold, error), func() error) {
			m := e.rwmutex(cli, name)
			if read {
				return m.RLock, m.Close
			}
			return m.Lock, m.Close
		}
	}
	sem := func(e *env, cli *clientv3.Client, name string) (func(context.Context) (*lock.Hold, error), func() error) {
		s := e.semaphore(cli, name, 2)
		return func(ctx context.Context) (*lock.Hold, error) { return s.Acquire(ctx, 1) }, s.Close
	}
	return []acquirer{
		{"Mutex.Lock", mutex(false)},
		{"Mutex.TryLock", mutex(true)},
		{"RWMutex.Lock", rw(false)},
		{"RWMutex.RLock", rw(true)},
		{"Semaphore.Acquire", sem},
	}
}

// A primitive that grants its own lease replaces it when it ends: an
// operator's revoke of the lease of an idle primitive costs the next
// acquire nothing but a new grant. ErrSessionExpired is for a lease that
// ended while its caller waited or held, and nothing did here.
func TestOwnLeaseReplacedAfterRevoke(t *testing.T) {
	t.Parallel()
	for _, a := range acquirers() {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			acquire, _ := a.open(e, e.cli, "own")
			ctx := ctxT(t, 20*time.Second)
			h, err := acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			old := h.Lease()
			if err := h.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := e.cli.Revoke(ctx, old); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				h, err := acquire(ctx)
				if err != nil {
					t.Fatalf("acquire %d after the revoke of the idle primitive's own lease: %v, want a hold on a new lease", i+1, err)
				}
				if h.Lease() == old {
					t.Fatalf("acquire %d holds on the revoked lease %x", i+1, old)
				}
				if err := h.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// closedClientBound bounds the calls that find the etcd client closed: they
// send nothing, so they return at once. It is a liveness bound, far above
// what they take, and below the request timeouts they waited for before.
const closedClientBound = 500 * time.Millisecond

// within runs fn and fails t if it takes longer than closedClientBound.
func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	start := time.Now()
	err := fn()
	if d := time.Since(start); d > closedClientBound {
		t.Errorf("%s with the client closed took %v, more than %v", what, d.Round(time.Millisecond), closedClientBound)
	}
	return err
}

// After its caller closed the etcd client, a hold's Unlock and the
// primitive's Close send nothing on a client that cannot send: they return
// at once, with ErrClientClosed for the holds they could not release (the
// keys go with the lease, which nobody renews).
func TestClosedClientUnlockAndCloseReturnAtOnce(t *testing.T) {
	t.Parallel()
	for _, a := range acquirers() {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := ctxT(t, 20*time.Second)
			holding := func(name string) (*lock.Hold, func() error, *clientv3.Client) {
				cli := e.client()
				acquire, closeP := a.open(e, cli, name)
				h, err := acquire(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return h, closeP, cli
			}
			// Unlock, then Close with no hold left.
			h, closeP, cli := holding("unlock")
			if err := cli.Close(); err != nil {
				t.Fatal(err)
			}
			err := within(t, "Unlock", func() error { return h.Unlock(ctx) })
			if !errors.Is(err, lock.ErrClientClosed) || errors.Is(err, context.Canceled) {
				t.Errorf("Unlock = %v, want ErrClientClosed", err)
			}
			// The failed Unlock left the key: Close may report it again.
			if err := within(t, "Close", closeP); err != nil && !errors.Is(err, lock.ErrClientClosed) {
				t.Errorf("Close after Unlock = %v, want nil or ErrClientClosed", err)
			}
			// Close with a hold.
			h, closeP, cli = holding("close")
			if err := cli.Close(); err != nil {
				t.Fatal(err)
			}
			err = within(t, "Close", closeP)
			if !errors.Is(err, lock.ErrClientClosed) || errors.Is(err, context.Canceled) {
				t.Errorf("Close with a hold = %v, want ErrClientClosed", err)
			}
			if h.Err() == nil {
				t.Errorf("hold still current after Close")
			}
			waitKeys(t, e.cli, e.ns, 0) // the keys went with the leases' TTL
		})
	}
}
