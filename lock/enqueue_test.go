package lock_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// txnLog records the Txns a client sends, with whether each succeeded.
type txnLog struct {
	mu    sync.Mutex
	txns  []sentTxn
	added chan struct{} // closed and replaced at each record
}

type sentTxn struct {
	req       *pb.TxnRequest
	succeeded bool
}

// recordingClient returns a new client of the shared server whose write
// Txns (those with a put or a delete) are recorded in the returned log: the
// enqueues, and no confirm read of a waiter.
func (e *env) recordingClient() (*clientv3.Client, *txnLog) {
	l := &txnLog{added: make(chan struct{})}
	rec := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if r, ok := req.(*pb.TxnRequest); ok && err == nil && writes(r) {
			l.mu.Lock()
			l.txns = append(l.txns, sentTxn{req: proto.Clone(r).(*pb.TxnRequest), succeeded: reply.(*pb.TxnResponse).Succeeded})
			close(l.added)
			l.added = make(chan struct{})
			l.mu.Unlock()
		}
		return err
	})
	cli, err := integration.Shared(e.t).NewClient(func(cfg *clientv3.Config) {
		cfg.DialOptions = append(cfg.DialOptions, rec)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cli.Close() })
	return cli, l
}

// writes reports whether r has a put or a delete in either branch.
func writes(r *pb.TxnRequest) bool {
	for _, op := range append(append([]*pb.RequestOp(nil), r.Success...), r.Failure...) {
		if op.GetRequestPut() != nil || op.GetRequestDeleteRange() != nil {
			return true
		}
	}
	return false
}

// since returns the Txns sent after the first n.
func (l *txnLog) since(n int) []sentTxn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sentTxn(nil), l.txns[n:]...)
}

// waitLen waits up to d for n Txns to be recorded.
func (l *txnLog) waitLen(t *testing.T, n int, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		l.mu.Lock()
		got, added := len(l.txns), l.added
		l.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-added:
		case <-timeout:
			t.Fatalf("%d Txns recorded after %v, want %d", got, d, n)
		}
	}
}

func (l *txnLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.txns)
}

// puts reports whether t puts key (in its Then branch).
func (t sentTxn) puts(key string) bool {
	for _, op := range t.req.Success {
		if p := op.GetRequestPut(); p != nil && string(p.Key) == key {
			return true
		}
	}
	return false
}

// lean reports whether t is a lean enqueue: a put on success, nothing else.
func (t sentTxn) lean() bool { return len(t.req.Success) == 1 && len(t.req.Failure) == 0 }

// An acquire on a lock found idle by the last acquire sends the lean
// enqueue: its comparisons and one put, no Else branch, and no comparison
// of its own key when the rule's range holds it. On a busy lock the lean
// Txn fails having written nothing, the full enqueue follows (one more
// round trip), the waiter is granted in order, and the next acquire is
// full again until one finds the lock idle.
func TestLeanEnqueue(t *testing.T) {
	e := newEnv(t)
	cli, log := e.recordingClient()
	m := e.mutex(cli, "lean")
	other := e.mutex(e.client(), "lean")

	cycle := func() (*lock.Hold, []sentTxn) {
		t.Helper()
		n := log.len()
		h := mustLock(t, m)
		sent := log.since(n)
		mustUnlock(t, h)
		return h, sent
	}
	// The first acquire knows nothing of the lock: a full enqueue.
	h1, sent := cycle()
	if len(sent) != 1 || sent[0].lean() || !sent[0].succeeded {
		t.Fatalf("first acquire sent %d Txns, want 1 full enqueue: %v", len(sent), sent)
	}
	// It found the lock idle: the next sends the lean enqueue, once.
	h2, sent := cycle()
	if len(sent) != 1 || !sent[0].lean() || !sent[0].succeeded || !sent[0].puts(h2.Token().Key) {
		t.Fatalf("second acquire sent %v, want 1 lean enqueue of %s", sent, h2.Token().Key)
	}
	if cmps := sent[0].req.Compare; len(cmps) != 1 || len(cmps[0].RangeEnd) == 0 {
		t.Fatalf("lean enqueue compares %v, want the lock's range only", cmps)
	}
	if h2.Token().Revision <= h1.Token().Revision {
		t.Fatalf("token %v not above %v", h2.Token(), h1.Token())
	}

	// Busy: the lean Txn fails, the full one enqueues, the waiter is
	// granted after the holder, and nothing else of its own was written.
	held := mustLock(t, other)
	n := log.len()
	got := make(chan *lock.Hold, 1)
	go func() {
		h, err := m.Lock(ctxT(t, 10*time.Second))
		if err != nil {
			t.Errorf("Lock: %v", err)
		}
		got <- h
	}()
	waitKeys(t, e.cli, e.ns, 2) // the holder's key and the waiter's
	// The log records a Txn once its answer is back, which can be after
	// etcd shows the key: wait for the full enqueue's answer too.
	log.waitLen(t, n+2, 5*time.Second)
	sent = log.since(n)
	if len(sent) != 2 || !sent[0].lean() || sent[0].succeeded || sent[1].lean() {
		t.Fatalf("acquire on a busy lock sent %v, want a failed lean enqueue and a full one", sent)
	}
	select {
	case h := <-got:
		t.Fatalf("granted %v while %v holds", h, held.Token())
	default:
	}
	mustUnlock(t, held)
	h3 := <-got
	if h3 == nil {
		return
	}
	if !sent[1].puts(h3.Token().Key) || h3.Token().Revision <= held.Token().Revision {
		t.Fatalf("granted %v, not the full enqueue's key after %v", h3.Token(), held.Token())
	}
	mustUnlock(t, h3)

	// That acquire waited: the next is full again, and the one after lean.
	if _, sent = cycle(); len(sent) != 1 || sent[0].lean() {
		t.Fatalf("acquire after a wait sent %v, want 1 full enqueue", sent)
	}
	if _, sent = cycle(); len(sent) != 1 || !sent[0].lean() {
		t.Fatalf("acquire after an idle one sent %v, want 1 lean enqueue", sent)
	}
}

// A reader's key is outside the range its rule compares (the writers'), so
// its lean enqueue keeps the comparison that its own key is absent; a
// writer's key is inside, so its lean enqueue does without.
func TestLeanEnqueueComparesOwnKeyOnlyOutsideTheRange(t *testing.T) {
	e := newEnv(t)
	cli, log := e.recordingClient()
	m := e.rwmutex(cli, "rw")
	ctx := ctxT(t, 10*time.Second)
	for i := 0; i < 2; i++ { // the second of each kind is lean
		h, err := m.RLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustUnlock(t, h)
		h, err = m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustUnlock(t, h)
	}
	n := log.len()
	r, err := m.RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustUnlock(t, r)
	w, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustUnlock(t, w)
	var enq []sentTxn
	for _, s := range log.since(n) {
		if len(s.req.Success) == 1 && s.req.Success[0].GetRequestPut() != nil {
			enq = append(enq, s)
		}
	}
	if len(enq) != 2 || !enq[0].lean() || !enq[1].lean() {
		t.Fatalf("sent %v, want the reader's and the writer's lean enqueues", enq)
	}
	ownKey := func(s sentTxn, key string) bool {
		for _, c := range s.req.Compare {
			if string(c.Key) == key && len(c.RangeEnd) == 0 {
				return true
			}
		}
		return false
	}
	if rk := r.Token().Key; !ownKey(enq[0], rk) || len(enq[0].req.Compare) != 2 {
		t.Errorf("reader's lean enqueue compares %v, want its key %s absent and no writer", enq[0].req.Compare, rk)
	}
	if wk := w.Token().Key; ownKey(enq[1], wk) || len(enq[1].req.Compare) != 1 || !strings.HasSuffix(string(enq[1].req.Compare[0].Key), "/") {
		t.Errorf("writer's lean enqueue compares %v, want the lock's range only", enq[1].req.Compare)
	}
}

// A read-write lock's readers and writers keep separate hints: a reader
// let in beside other readers says nothing of a writer's chances, so the
// next Lock, whose last one had to wait, sends the full enqueue alone.
func TestRWHintsApart(t *testing.T) {
	e := newEnv(t)
	cli, log := e.recordingClient()
	m := e.rwmutex(cli, "rw")
	other := e.rwmutex(e.client(), "rw")
	ctx := ctxT(t, 10*time.Second)
	lockBehindReader := func() []sentTxn {
		t.Helper()
		r, err := other.RLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := log.len()
		got := make(chan *lock.Hold, 1)
		go func() {
			h, err := m.Lock(ctx)
			if err != nil {
				t.Errorf("Lock: %v", err)
			}
			got <- h
		}()
		waitKeys(t, e.cli, e.ns, 2)
		log.waitLen(t, n+1, 5*time.Second) // its first Txn's answer is back
		sent := log.since(n)
		mustUnlock(t, r)
		if w := <-got; w != nil {
			mustUnlock(t, w)
		}
		return sent
	}
	lockBehindReader() // the writer's last acquire waited
	r, err := other.RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	own, err := m.RLock(ctx) // let in at once, beside the other reader
	if err != nil {
		t.Fatal(err)
	}
	mustUnlock(t, own)
	mustUnlock(t, r)
	if sent := lockBehindReader(); len(sent) != 1 || sent[0].lean() {
		t.Fatalf("Lock behind a reader after an RLock let in at once sent %v, want the full enqueue alone", sent)
	}
}
