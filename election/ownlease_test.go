package election_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/election"
)

// An Election that grants its own lease replaces it when it ends: an
// operator's revoke of the lease of an idle Election costs the next
// Campaign nothing but a new grant. ErrSessionExpired is for a lease that
// ended while the candidate waited or led, and nothing did here.
func TestOwnLeaseReplacedAfterRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	el := e.election(e.cli)
	ctx := ctxT(t, 20*time.Second)
	term := mustCampaign(t, el, "a")
	old := term.Lease()
	mustResign(t, term)
	if _, err := e.cli.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		term, err := el.Campaign(ctx, "a")
		if err != nil {
			t.Fatalf("Campaign %d after the revoke of the idle Election's own lease: %v, want a term on a new lease", i+1, err)
		}
		if term.Lease() == old {
			t.Fatalf("Campaign %d leads on the revoked lease %x", i+1, old)
		}
		mustResign(t, term)
	}
}

// closedClientBound bounds the calls that find the etcd client closed: they
// send nothing, so they return at once. It is a liveness bound, far above
// what they take, and below the request timeouts they waited for before.
const closedClientBound = 500 * time.Millisecond

func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	start := time.Now()
	err := fn()
	if d := time.Since(start); d > closedClientBound {
		t.Errorf("%s with the client closed took %v, more than %v", what, d.Round(time.Millisecond), closedClientBound)
	}
	return err
}

// After its caller closed the etcd client, a term's Proclaim and Resign and
// the Election's Close send nothing on a client that cannot send: they
// return at once, with ErrClientClosed for the terms they could not resign
// (the key goes with the lease, which nobody renews).
func TestClosedClientResignAndCloseReturnAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t, 20*time.Second)
	isClosed := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, election.ErrClientClosed) || errors.Is(err, context.Canceled) {
			t.Errorf("%s = %v, want ErrClientClosed", what, err)
		}
	}
	// Proclaim and Resign, then Close with no term left.
	cli := e.client()
	el := e.election(cli)
	term := mustCampaign(t, el, "a")
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	isClosed("Proclaim", within(t, "Proclaim", func() error { return term.Proclaim(ctx, "b") }))
	isClosed("Resign", within(t, "Resign", func() error { return term.Resign(ctx) }))
	// The failed Resign left the key: Close may report it again.
	if err := within(t, "Close", el.Close); err != nil && !errors.Is(err, election.ErrClientClosed) {
		t.Errorf("Close after Resign = %v, want nil or ErrClientClosed", err)
	}
	// Close with a term.
	cli = e.client()
	el = e.election(cli)
	term = mustCampaign(t, el, "a")
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	isClosed("Close with a term", within(t, "Close", el.Close))
	if term.Err() == nil {
		t.Error("term still current after Close")
	}
	waitKeys(t, e.cli, e.ns, 0) // the keys went with the leases' TTL
}
