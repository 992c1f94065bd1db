package lock_test

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

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// eventClient returns a new client of the shared server that counts, in
// the returned counter, the delete events its watches receive.
func (e *env) eventClient() (*clientv3.Client, *atomic.Int64) {
	var n atomic.Int64
	count := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/etcdserverpb.Watch/Watch" {
			return s, err
		}
		return &eventCounter{ClientStream: s, n: &n}, nil
	})
	cli, err := integration.Shared(e.t).NewClient(func(cfg *clientv3.Config) {
		cfg.DialOptions = append(cfg.DialOptions, count)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cli.Close() })
	return cli, &n
}

type eventCounter struct {
	grpc.ClientStream
	n *atomic.Int64
}

func (s *eventCounter) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if r, ok := m.(*pb.WatchResponse); ok && err == nil {
		for _, ev := range r.Events {
			if ev.Type == mvccpb.DELETE {
				s.n.Add(1)
			}
		}
	}
	return err
}

// sum returns the counters' total.
func sum(cs []*atomic.Int64) int64 {
	var n int64
	for _, c := range cs {
		n += c.Load()
	}
	return n
}

// TestRWReleaseReachesOnlyWhomItAdmits: behind a writer w0 queue six
// readers, each on its own client, and a writer w1. w0's unlock reaches
// each reader once (the nearest writer ahead, which they all watch) and
// not w1; the readers' unlocks, oldest first, reach w1 once (its key
// ahead is the newest reader) and each reader only through its own
// key's watch. Counted by the clients: at most 2 per reader and 2 for w1,
// where a watch of the whole prefix per client sends each of the 8
// deletes to all 7 clients.
func TestRWReleaseReachesOnlyWhomItAdmits(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 30*time.Second)
	m := e.rwmutex(e.cli, "fan")
	w0 := mustWLock(t, m)
	const n = 6
	var (
		counts  []*atomic.Int64
		readers []*pendingHold
	)
	for i := range n {
		cli, c := e.eventClient()
		rm := e.rwmutex(cli, "fan")
		counts = append(counts, c)
		readers = append(readers, goAcquire(func() (*lock.Hold, error) { return rm.RLock(ctx) }))
		waitKeys(t, e.cli, m.Prefix(), int64(2+i))
	}
	wcli, wc := e.eventClient()
	wm := e.rwmutex(wcli, "fan")
	w1 := goAcquire(func() (*lock.Hold, error) { return wm.Lock(ctx) })
	waitKeys(t, e.cli, m.Prefix(), 2+n)

	mustUnlock(t, w0)
	var holds []*lock.Hold
	for i, r := range readers {
		holds = append(holds, grantedHold(t, r, fmt.Sprintf("reader %d", i)))
	}
	stillWaiting(t, w1, "w1 behind the readers")
	if got := wc.Load(); got != 0 {
		t.Errorf("w0's unlock sent w1 %d events, want 0: w1 waits for the newest reader", got)
	}
	for i, c := range counts {
		if got := c.Load(); got > 1 {
			t.Errorf("w0's unlock sent reader %d %d events, want 1", i, got)
		}
	}
	for i, h := range holds {
		if i == n-1 {
			stillWaiting(t, w1, "w1 before the newest reader unlocks")
		}
		mustUnlock(t, h)
	}
	mustUnlock(t, grantedHold(t, w1, "w1"))
	if got, most := sum(counts)+wc.Load(), int64(2*n+2); got > most {
		t.Errorf("the clients received %d delete events in all, want at most %d", got, most)
	}
}

// TestSemReleaseReachesItsWindowOnly: ten waiters, each on its own
// client, queue for one permit each behind the two holders of a
// semaphore of 2, and each unlocks once granted (their order is
// TestSemFIFO's). Each waiter watches
// only the nearest keys whose permits keep it out (two here), so each
// of the 12 deletes reaches at most two waiters, and each waiter's own
// unlock its own key's watch: at most 2*12+10 events in all, where a
// watch of the whole prefix per client sends every delete to all ten.
func TestSemReleaseReachesItsWindowOnly(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 30*time.Second)
	s := e.semaphore(e.cli, "fan", 2)
	a, b := mustAcquire(t, s, 1), mustAcquire(t, s, 1)
	const n = 10
	var (
		counts []*atomic.Int64
		wg     sync.WaitGroup
	)
	for i := range n {
		cli, c := e.eventClient()
		ws := e.semaphore(cli, "fan", 2)
		counts = append(counts, c)
		wg.Go(func() {
			h, err := ws.Acquire(ctx, 1)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			if err := h.Unlock(ctx); err != nil {
				t.Errorf("waiter %d: Unlock: %v", i, err)
			}
		})
		waitKeys(t, e.cli, s.Prefix(), int64(3+i))
	}
	mustUnlock(t, a)
	mustUnlock(t, b)
	wg.Wait()
	if got, most := sum(counts), int64(2*(n+2)+n); got > most {
		t.Errorf("the waiters received %d delete events in all, want at most %d", got, most)
	}
}

// rangeClient returns a new client of the shared server that records, in
// the returned counters, the most keys any range of its Txns answered
// with, and how many of the keys it received carried a value.
func (e *env) rangeClient() (*clientv3.Client, *atomic.Int64, *atomic.Int64) {
	var most, valued atomic.Int64
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		r, ok := reply.(*pb.TxnResponse)
		if err != nil || !ok {
			return err
		}
		for _, op := range r.Responses {
			rr := op.GetResponseRange()
			if rr == nil {
				continue
			}
			for n := int64(len(rr.Kvs)); ; {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			for _, kv := range rr.Kvs {
				if len(kv.Value) > 0 {
					valued.Add(1)
				}
			}
		}
		return err
	})
	cli, err := integration.Shared(e.t).NewClient(func(cfg *clientv3.Config) {
		cfg.DialOptions = append(cfg.DialOptions, count)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cli.Close() })
	return cli, &most, &valued
}

// TestSemReadsNearestKeysOnly: twelve requests for one permit queue behind
// the two holders of a semaphore of 2, each on its own client. Every
// enqueue and confirm read of theirs answers with keys only (each key's
// name carries its permits and the limit) and at most the limit's worth
// of keys ahead (plus the enqueue's own key), where reading every key
// ahead with its value sends the last waiter 13 keys and values.
func TestSemReadsNearestKeysOnly(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 30*time.Second)
	const limit, n = 2, 12
	s := e.semaphore(e.cli, "near", limit)
	a, b := mustAcquire(t, s, 1), mustAcquire(t, s, 1)
	var (
		mosts, valueds []*atomic.Int64
		wg             sync.WaitGroup
	)
	for i := range n {
		cli, most, valued := e.rangeClient()
		ws := e.semaphore(cli, "near", limit)
		mosts, valueds = append(mosts, most), append(valueds, valued)
		wg.Go(func() {
			h, err := ws.Acquire(ctx, 1)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			if err := h.Unlock(ctx); err != nil {
				t.Errorf("waiter %d: Unlock: %v", i, err)
			}
		})
		waitKeys(t, e.cli, s.Prefix(), int64(limit+1+i))
	}
	mustUnlock(t, a)
	mustUnlock(t, b)
	wg.Wait()
	for i := range n {
		if got := mosts[i].Load(); got > limit+1 {
			t.Errorf("waiter %d read %d keys in one range, want at most %d", i, got, limit+1)
		}
		if got := valueds[i].Load(); got != 0 {
			t.Errorf("waiter %d received %d values, want keys only", i, got)
		}
	}
	waitKeys(t, e.cli, s.Prefix(), 0)
}
