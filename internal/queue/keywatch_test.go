package queue

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/internal/config"
)

// reqCount counts what a client asks of etcd: write and read-only Txns,
// watch streams opened and watch creates sent. It also keeps the revision
// of the last write's answer, and of every read's.
type reqCount struct {
	writes, reads, streams, creates atomic.Int64
	lastWrite                       atomic.Int64

	mu       sync.Mutex
	readRevs []int64
}

// readsSince returns the revisions of the reads answered after the first n.
func (c *reqCount) readsSince(n int64) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.readRevs[n:]...)
}

type reqSnap struct{ writes, reads, streams, creates int64 }

func (c *reqCount) snap() reqSnap {
	return reqSnap{c.writes.Load(), c.reads.Load(), c.streams.Load(), c.creates.Load()}
}

func (s reqSnap) minus(o reqSnap) reqSnap {
	return reqSnap{s.writes - o.writes, s.reads - o.reads, s.streams - o.streams, s.creates - o.creates}
}

type createCounter struct {
	grpc.ClientStream
	c *reqCount
}

func (s createCounter) SendMsg(m any) error {
	if r, ok := m.(*pb.WatchRequest); ok && r.GetCreateRequest() != nil {
		s.c.creates.Add(1)
	}
	return s.ClientStream.SendMsg(m)
}

// countingClient returns a client whose requests count in the returned
// reqCount; it is closed at cleanup.
func countingClient(t *testing.T) (*clientv3.Client, *reqCount) {
	t.Helper()
	c := &reqCount{}
	unary := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*pb.TxnRequest); ok {
			write := false
			for _, op := range append(append([]*pb.RequestOp(nil), r.Success...), r.Failure...) {
				write = write || op.GetRequestPut() != nil || op.GetRequestDeleteRange() != nil
			}
			err := invoker(ctx, method, req, reply, cc, opts...)
			rev := reply.(*pb.TxnResponse).GetHeader().GetRevision()
			if write {
				c.writes.Add(1)
				c.lastWrite.Store(rev)
			} else {
				c.mu.Lock()
				c.readRevs = append(c.readRevs, rev)
				c.mu.Unlock()
				c.reads.Add(1)
			}
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	stream := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/etcdserverpb.Watch/Watch" {
			return s, err
		}
		c.streams.Add(1)
		return createCounter{ClientStream: s, c: c}, nil
	})
	cli, err := integration.Shared(t).NewClient(func(cfg *clientv3.Config) {
		cfg.DialOptions = append(cfg.DialOptions, unary, stream)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli, c
}

var testPublic = NewPublic("queue test: ", Sentinels{}, func(t fencing.Token, cause error) error {
	return fmt.Errorf("%w: %v: %w", ErrLost, t, cause)
})

// mutexPrimitive returns a mutex-like Primitive (exclusive rule, per-key
// watches) on cli, named name under ns, closed at cleanup.
func mutexPrimitive(t *testing.T, cli *clientv3.Client, ns, name string) *Primitive {
	t.Helper()
	p, err := NewPrimitive(cli, "mutex", name, Exclusive{}, KeyWatches, []config.Option{config.Namespace(ns)}, testPublic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func mustAcquire(t *testing.T, p *Primitive) *Hold {
	t.Helper()
	h, err := p.Acquire(ctxT(t, 10*time.Second), &p.Q, Request{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustRelease(t *testing.T, h *Hold) {
	t.Helper()
	if err := h.Release(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// putWatch returns the puts of new keys under prefix, from now on.
func putWatch(t *testing.T, cli *clientv3.Client, prefix string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if wr := <-wch; !wr.Created {
		cancel()
		t.Fatalf("watch not created: %v", wr.Err())
	}
	out := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.PUT && ev.Kv.Version == 1 {
					out <- string(ev.Kv.Key)
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

// waitBehind starts p's acquire while holder holds, waits until p's key is
// in the queue, releases holder, and returns p's hold.
func waitBehind(t *testing.T, p *Primitive, holder *Hold, puts <-chan string) *Hold {
	t.Helper()
	got := make(chan *Hold, 1)
	go func() {
		h, err := p.Acquire(ctxT(t, 10*time.Second), &p.Q, Request{})
		if err != nil {
			t.Errorf("Acquire: %v", err)
		}
		got <- h
	}()
	select {
	case <-puts:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter's key never appeared")
	}
	select {
	case h := <-got:
		t.Fatalf("granted %v while %v holds", h.Token(), holder.Token())
	default:
	}
	mustRelease(t, holder)
	h := <-got
	if h == nil {
		t.FailNow()
	}
	if h.Token().Revision <= holder.Token().Revision {
		t.Fatalf("token %v not above the holder's %v", h.Token(), holder.Token())
	}
	return h
}

// twoContenders returns two mutex-like Primitives on one lock under a new
// namespace (left empty at cleanup), each on a counting client, and the
// puts of new keys in the lock's queue.
func twoContenders(t *testing.T) (other, p *Primitive, otherCount, count *reqCount, puts <-chan string) {
	t.Helper()
	ns := integration.Namespace(t)
	t.Cleanup(func() { integration.RequireEmpty(t, integration.Shared(t).Client(t), ns) })
	ocli, otherCount := countingClient(t)
	other = mutexPrimitive(t, ocli, ns, "m")
	cli, count := countingClient(t)
	p = mutexPrimitive(t, cli, ns, "m")
	return other, p, otherCount, count, putWatch(t, integration.Shared(t).Client(t), other.Q.Prefix)
}

// A contender that waits again and again behind the same other contender
// keeps its watch stream, its own-key watch and the watch on the key ahead
// (a slot name, reused): from the second wait on, a wait opens no stream,
// creates no watch, and reads once, after the delete, when nothing else
// writes; the hold that follows watches its key through the kept watch, at
// no request.
//
// etcd sends a delete's event before its reads show the delete, so the
// read that follows the event may be answered at the revision before it;
// the waiter then asks again, as of a member behind. Such reads are told
// apart by their revision.
func TestWaitsKeepTheirWatches(t *testing.T) {
	other, p, otherCount, count, puts := twoContenders(t)

	for i := range 4 {
		holder := mustAcquire(t, other)
		<-puts // the holder's key
		before := count.snap()
		h := waitBehind(t, p, holder, puts)
		got := count.snap().minus(before)
		released := otherCount.lastWrite.Load() // the holder's release
		mustRelease(t, h)
		if i == 0 {
			continue // the first wait opens the stream and the watches
		}
		var current int64
		for _, rev := range count.readsSince(before.reads) {
			if rev >= released {
				current++
			}
		}
		got.reads = current
		want := reqSnap{writes: 1, reads: 1}
		if got != want {
			t.Fatalf("wait %d sent %+v (reads: those at or after the release), want only the enqueue and one read: %+v", i+1, got, want)
		}
	}
}

// In a loop of two contenders, the acquire after one admitted at once (the
// other had just released) does not try the lean enqueue: its kept watch
// on the other's key saw that key deleted since its last wait.
func TestLeanEnqueueNotAfterAnotherContender(t *testing.T) {
	other, p, _, count, puts := twoContenders(t)

	b := mustAcquire(t, other)
	<-puts
	a := waitBehind(t, p, b, puts) // p keeps the watch on other's key
	b = waitBehind(t, other, a, puts)
	mustRelease(t, b) // a delete p's kept watch delivers
	a = mustAcquire(t, p)
	<-puts
	b = waitBehind(t, other, a, puts)
	// p's last acquire was admitted at once, but other used the lock
	// before it: one full enqueue, no lean one failing first.
	before := count.snap()
	a = waitBehind(t, p, b, puts)
	if got := count.snap().minus(before); got.writes != 1 {
		t.Fatalf("acquire behind the other contender sent %d write Txns, want 1 (no failed lean enqueue)", got.writes)
	}
	mustRelease(t, a)
}
