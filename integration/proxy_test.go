package integration_test

import (
	"testing"
	"time"
)

// Pausing twice and unpausing twice must leave no traffic held: the etcd
// proxy replaces its pause channel on every pause, so bytes held by the
// first pause would wait on a channel no Unpause closes.
func TestProxyPauseNests(t *testing.T) {
	p, cli := proxied(t)
	p.Pause()
	if err := getWithin(cli, 200*time.Millisecond); err == nil { // its bytes are held
		t.Fatal("Get through a paused proxy succeeded")
	}
	p.Pause()
	p.Unpause()
	if err := getWithin(cli, 200*time.Millisecond); err == nil {
		t.Fatal("Get succeeded after one Unpause of two Pauses")
	}
	p.Unpause()
	// Well under the client's keep-alive timeout (12 s), after which it
	// would reconnect and hide a connection held for good.
	if err := getWithin(cli, 3*time.Second); err != nil {
		t.Fatalf("Get after as many Unpauses as Pauses: %v", err)
	}
	p.Unpause() // unmatched: does nothing
	if err := getWithin(cli, 3*time.Second); err != nil {
		t.Fatalf("Get after an extra Unpause: %v", err)
	}
}
