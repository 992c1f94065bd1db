package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/lease"
)

func TestMain(m *testing.M) { integration.Main(m) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// The deadline is timed from a renewal's send, not its answer: with every
// answer a second late, it is at least a second earlier than receive time
// plus TTL minus margin would make it, and never before the send.
func TestDeadlineFromSendTime(t *testing.T) {
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)
	direct := srv.Client(t)
	const ttl, margin, late = 10 * time.Second, 2 * time.Second, time.Second
	g, err := direct.Grant(ctxT(t, 5*time.Second), int64(ttl/time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Revoke(ctxT(t, 5*time.Second), g.ID)
	if _, err := cli.Get(ctxT(t, 5*time.Second), "warm-up"); err != nil { // connect first
		t.Fatal(err)
	}

	p.Server().DelayRx(late, 0)
	defer p.Server().UndelayRx()
	beforeSend := time.Now()
	k := lease.Start(cli, g.ID, lease.Config{Margin: margin}) // TTL unknown: it probes at once
	defer k.Stop()
	if _, err := k.Current(ctxT(t, 10*time.Second)); err != nil { // the first renewal's answer
		t.Fatal(err)
	}
	received := time.Now()
	d, gotTTL := k.Deadline()
	if gotTTL != ttl {
		t.Fatalf("TTL %v, want %v", gotTTL, ttl)
	}
	if received.Sub(beforeSend) < late {
		t.Fatalf("the renewal was answered %v after it was sent, through a %v delay", received.Sub(beforeSend), late)
	}
	if earliest := beforeSend.Add(ttl - margin); d.Before(earliest) {
		t.Errorf("deadline %v before the send could make it (%v)", d, earliest)
	}
	if latest := received.Add(-late + ttl - margin); d.After(latest) {
		t.Errorf("deadline %v after %v: timed from the answer, not the send", d, latest)
	}
}

// A keeper reports the lease gone at its first renewal after a revoke (one
// comes every TTL/3), and then refuses to open an epoch.
func TestRevokedLeaseIsGone(t *testing.T) {
	srv := integration.Shared(t)
	cli := srv.Client(t)
	const ttl = 3 * time.Second
	g, err := cli.Grant(ctxT(t, 5*time.Second), int64(ttl/time.Second))
	if err != nil {
		t.Fatal(err)
	}
	k := lease.Start(cli, g.ID, lease.Config{})
	defer k.Stop()
	if _, err := k.Current(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	if _, err := cli.Revoke(ctxT(t, 5*time.Second), g.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.GoneCh():
		t.Logf("gone %v after the revoke", time.Since(revoked))
	case <-time.After(ttl + 10*time.Second): // a hang detector
		t.Fatal("keeper never noticed the revoke")
	}
	if !errors.Is(k.Gone(), lease.ErrExpired) {
		t.Fatalf("Gone = %v, want ErrExpired", k.Gone())
	}
	if _, err := k.Current(ctxT(t, 5*time.Second)); !errors.Is(err, lease.ErrExpired) {
		t.Fatalf("Current after the revoke = %v, want ErrExpired", err)
	}
}

// remainingTTL polls the lease's remaining TTL (whole seconds, rounded
// down) until ok accepts it.
func remainingTTL(t *testing.T, cli *clientv3.Client, id clientv3.LeaseID, ok func(int64) bool) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	for {
		resp, err := cli.TimeToLive(ctx, id)
		if err != nil {
			t.Fatalf("TimeToLive: %v", err)
		}
		if ok(resp.TTL) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("remaining TTL stays at %d s", resp.TTL)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// A Check made while a renewal is in flight is answered by a renewal sent
// after it: the answer to the earlier one says nothing of what the caller
// saw since. Here the lease is revoked after the server renewed it for the
// probe in flight and before that answer arrives; the keeper must learn of
// the revoke from a new probe, not from the next one due TTL/3 later.
func TestCheckDuringProbeAsksAgain(t *testing.T) {
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)
	direct := srv.Client(t)
	const ttl = 90 * time.Second // renewals every 30 s
	g, err := direct.Grant(ctxT(t, 5*time.Second), int64(ttl/time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Revoke(ctxT(t, 5*time.Second), g.ID) // if the test fails early
	k := lease.Start(cli, g.ID, lease.Config{})
	defer k.Stop()
	if _, err := k.Current(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Right after a renewal the server reports 89 s left: wait until it
	// reports less, so that 89 again means a new renewal.
	full := int64(ttl/time.Second) - 1
	remainingTTL(t, direct, g.ID, func(s int64) bool { return s < full })

	p.Server().PauseRx() // answers are held
	defer p.Server().UnpauseRx()
	k.Check() // a renewal goes out
	remainingTTL(t, direct, g.ID, func(s int64) bool { return s >= full })
	if _, err := direct.Revoke(ctxT(t, 5*time.Second), g.ID); err != nil {
		t.Fatal(err)
	}
	k.Check() // a sign the lease may be gone, while the renewal is in flight
	p.Server().UnpauseRx()

	select {
	case <-k.GoneCh():
	case <-time.After(ttl / 6): // half the time to the next scheduled renewal
		t.Fatal("the keeper did not renew again after a Check made during a renewal")
	}
}
