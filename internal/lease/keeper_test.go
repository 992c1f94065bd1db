package lease_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

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

// keepAliveEnded makes a client option whose keep-alive streams send on
// ended when they fail after their context ended.
func keepAliveEnded(ended chan<- struct{}) func(*clientv3.Config) {
	ic := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || !strings.HasSuffix(method, "/LeaseKeepAlive") {
			return s, err
		}
		return &endedStream{ClientStream: s, ended: ended}, nil
	}
	return func(c *clientv3.Config) {
		c.DialOptions = append(c.DialOptions, grpc.WithChainStreamInterceptor(ic))
	}
}

type endedStream struct {
	grpc.ClientStream
	ended chan<- struct{}
}

func (s *endedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil && s.Context().Err() != nil {
		select {
		case s.ended <- struct{}{}:
		default:
		}
	}
	return err
}

// Stop tries once more to delete the keys handed over with Orphan, even when
// it comes while a renewal is in flight: the lease lives on (a caller's
// session), and so would the keys, blocking their queues. Whether the
// keeper's loop first sees the end of its context or the failed renewal is
// the scheduler's choice, so the race runs several times; in each, the loop
// is held (in its logger, at the deadline) until both are ready.
func TestStopFlushesOrphansWhileRenewing(t *testing.T) {
	srv := integration.Shared(t)
	direct := srv.Client(t)
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			stopWhileRenewing(t, srv, direct)
		})
	}
}

func stopWhileRenewing(t *testing.T, srv *integration.Server, direct *clientv3.Client) {
	p := integration.NewProxy(t, srv.Endpoint())
	ended := make(chan struct{}, 1)
	cli, err := srv.NewClient(func(c *clientv3.Config) { c.Endpoints = []string{p.Endpoint()} }, keepAliveEnded(ended))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })

	g, err := direct.Grant(ctxT(t, 5*time.Second), 60) // outlives the test
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = direct.Revoke(ctxT(t, 5*time.Second), g.ID) })
	key := integration.Namespace(t) + "orphan"
	put, err := direct.Put(ctxT(t, 5*time.Second), key, "", clientv3.WithLease(g.ID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Get(ctxT(t, 5*time.Second), "warm-up"); err != nil { // connect first
		t.Fatal(err)
	}

	atDeadline, release := make(chan struct{}), make(chan struct{})
	lg := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.DebugLevel),
		zap.Hooks(func(e zapcore.Entry) error {
			if strings.HasPrefix(e.Message, "lease renewal deadline passed") {
				close(atDeadline)
				<-release
			}
			return nil
		}))
	// The keeper is told a short TTL, so that its deadline comes soon; the
	// lease itself lasts a minute.
	k := lease.Start(cli, g.ID, lease.Config{TTL: 3 * time.Second, Sent: time.Now(), Margin: time.Second, Logger: lg})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(func() { p.Unpause(); unblock(); k.Stop() }) // if the test fails early
	p.Pause()
	k.Orphan(key, put.Header.Revision) // its renewal hangs in the proxy
	select {
	case <-atDeadline: // the keeper's loop is held, with the renewal in flight
	case <-time.After(10 * time.Second): // a hang detector
		t.Fatal("the deadline never passed")
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		k.Stop()
	}()
	select {
	case <-ended: // the renewal failed: both it and the Stop wait for the loop
	case <-time.After(10 * time.Second):
		t.Fatal("the renewal was not cut short by Stop")
	}
	p.Unpause()
	unblock()
	select {
	case <-stopped:
	case <-time.After(lease.RevokeTimeout + 10*time.Second):
		t.Fatal("Stop did not return")
	}
	resp, err := direct.Get(ctxT(t, 5*time.Second), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatal("the orphan key is still there after Stop")
	}
}

// A Source being closed fails Get at once: Get does not wait behind the
// revoke of Close, which may take RevokeTimeout with etcd unreachable.
func TestSourceGetDuringClose(t *testing.T) {
	srv := integration.Shared(t)
	p := integration.NewProxy(t, srv.Endpoint())
	cli := p.Client(t)
	s := lease.NewSource(cli, nil, 10*time.Second, 2*time.Second, zap.NewNop())
	k, err := s.Get(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	p.Pause() // the revoke hangs until Unpause (or RevokeTimeout)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for {
		_, err := s.Get(ctxT(t, 10*time.Second))
		if errors.Is(err, lease.ErrClosed) {
			break
		}
		if err != nil {
			t.Fatalf("Get during Close: %v, want ErrClosed", err)
		}
		time.Sleep(time.Millisecond) // Close has not begun
	}
	select {
	case err := <-closed:
		t.Fatalf("Get failed only once Close had returned (%v): it waited behind the revoke", err)
	default:
	}
	p.Unpause()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	ttl, err := srv.Client(t).TimeToLive(ctxT(t, 10*time.Second), k.ID())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL > 0 {
		t.Errorf("lease %x lives on after Close (TTL %d)", k.ID(), ttl.TTL)
	}
}

// A key handed over with revision 0 (a put whose outcome is unknown) may
// land after the TTL of a short-lived lease: etcd may apply a proposal up
// to its request timeout, or after a leader election, later. The keeper
// must still delete it then, not only within one TTL.
func TestOrphanLandingAfterTTL(t *testing.T) {
	srv := integration.Shared(t)
	cli := srv.Client(t)
	ns := integration.Namespace(t)
	g, err := cli.Grant(ctxT(t, 5*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cli.Revoke(ctxT(t, 5*time.Second), g.ID) })
	k := lease.Start(cli, g.ID, lease.Config{TTL: time.Second, Sent: time.Now()}) // renews every 333 ms
	defer k.Stop()
	key := ns + "late"
	k.Orphan(key, 0)
	time.Sleep(2 * time.Second) // two TTLs: the put lands late
	if _, err := cli.Put(ctxT(t, 5*time.Second), key, "", clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	integration.WaitKeyCount(t, cli, ns, 0, 5*time.Second)
}
