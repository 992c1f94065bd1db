package main

import (
	"context"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// reqTally counts the requests of every client the bench makes, by kind,
// so that the contended rows can show what a critical section asks of
// etcd. Its counters are safe for concurrent use.
type reqTally struct {
	writes  atomic.Int64 // Txns with a put or a delete
	reads   atomic.Int64 // Ranges and read-only Txns
	creates atomic.Int64 // watch create requests, on any stream
	streams atomic.Int64 // watch streams opened
	// events, if set, reads the server's count of watch events sent (the
	// embedded server's etcd_debugging_mvcc_events_total).
	events func() int64
	// fsyncs, if set, reads the server's WAL fsyncs: how many, and their
	// time (the embedded server's etcd_disk_wal_fsync_duration_seconds).
	fsyncs func() (int64, time.Duration)
}

// reqCounts is a reading of a reqTally; events is -1 when not known.
type reqCounts struct{ writes, reads, creates, streams, events int64 }

func (t *reqTally) read() reqCounts {
	c := reqCounts{t.writes.Load(), t.reads.Load(), t.creates.Load(), t.streams.Load(), -1}
	if t.events != nil {
		c.events = t.events()
	}
	return c
}

// sub returns c minus o; events is -1 when either reading has none.
func (c reqCounts) sub(o reqCounts) reqCounts {
	ev := c.events - o.events
	if c.events < 0 || o.events < 0 {
		ev = -1
	}
	return reqCounts{c.writes - o.writes, c.reads - o.reads, c.creates - o.creates, c.streams - o.streams, ev}
}

// walUse is the server's WAL fsyncs over a time: how many, and the time
// spent in them; ok false when not known.
type walUse struct {
	fsyncs int64
	time   time.Duration
	ok     bool
}

// wal reads the server's WAL fsyncs so far.
func (t *reqTally) wal() walUse {
	if t.fsyncs == nil {
		return walUse{}
	}
	n, d := t.fsyncs()
	return walUse{n, d, n >= 0}
}

// sub returns w minus o, not known when either is not.
func (w walUse) sub(o walUse) walUse {
	return walUse{w.fsyncs - o.fsyncs, w.time - o.time, w.ok && o.ok}
}

// dialOptions returns the interceptors that count a client's requests in t.
func (t *reqTally) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			switch r := req.(type) {
			case *pb.TxnRequest:
				if txnWrites(r) {
					t.writes.Add(1)
				} else {
					t.reads.Add(1)
				}
			case *pb.RangeRequest:
				t.reads.Add(1)
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil || method != "/etcdserverpb.Watch/Watch" {
				return s, err
			}
			t.streams.Add(1)
			return &countedStream{ClientStream: s, t: t}, nil
		}),
	}
}

// countedStream counts the watch creates sent on a watch stream.
type countedStream struct {
	grpc.ClientStream
	t *reqTally
}

func (s *countedStream) SendMsg(m any) error {
	if r, ok := m.(*pb.WatchRequest); ok && r.GetCreateRequest() != nil {
		s.t.creates.Add(1)
	}
	return s.ClientStream.SendMsg(m)
}

// txnWrites reports whether r can write: a put or a delete in either
// branch (etcd sends such a Txn through raft even when it writes nothing).
func txnWrites(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if op.GetRequestPut() != nil || op.GetRequestDeleteRange() != nil {
				return true
			}
			if t := op.GetRequestTxn(); t != nil && txnWrites(t) {
				return true
			}
		}
	}
	return false
}
