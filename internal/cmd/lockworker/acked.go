package main

import (
	"context"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// ackLog records, at the gRPC boundary and so apart from the library's
// lease keeper, until when etcd has acknowledged each lease: the send
// time of each keep-alive request it answered with a TTL, plus that TTL.
// The server renewed the lease no earlier than the request was sent, so
// it must keep the lease at least until then; a lease whose end the
// suite's watcher saw earlier, etcd ended early. Measured here, a keeper
// that times its deadline wrongly (the planted bug ReceiveTimeDeadline)
// cannot pass its own lateness off as etcd's. It is safe for concurrent
// use.
type ackLog struct {
	mu    sync.Mutex
	until map[int64]time.Time // by lease ID
}

func newAckLog() *ackLog { return &ackLog{until: make(map[int64]time.Time)} }

// Until returns until when etcd has acknowledged lease id, zero if it never
// answered a renewal of it.
func (a *ackLog) Until(id int64) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.until[id]
}

// interceptor wraps the lease keep-alive streams of a client.
func (a *ackLog) interceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != "/etcdserverpb.Lease/LeaseKeepAlive" {
		return s, err
	}
	return &ackStream{ClientStream: s, log: a}, nil
}

// ackStream pairs each answer with the oldest unanswered request: a stream
// answers in order.
type ackStream struct {
	grpc.ClientStream
	log  *ackLog
	mu   sync.Mutex
	sent []time.Time
}

func (s *ackStream) SendMsg(m any) error {
	if _, ok := m.(*pb.LeaseKeepAliveRequest); ok {
		s.mu.Lock()
		s.sent = append(s.sent, time.Now()) // before the bytes leave: never late
		s.mu.Unlock()
	}
	return s.ClientStream.SendMsg(m)
}

func (s *ackStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	resp, ok := m.(*pb.LeaseKeepAliveResponse)
	if err != nil || !ok {
		return err
	}
	s.mu.Lock()
	var sent time.Time
	if len(s.sent) > 0 {
		sent, s.sent = s.sent[0], s.sent[1:]
	}
	s.mu.Unlock()
	if sent.IsZero() || resp.TTL <= 0 {
		return nil
	}
	until := sent.Add(time.Duration(resp.TTL) * time.Second)
	s.log.mu.Lock()
	if until.After(s.log.until[resp.ID]) {
		s.log.until[resp.ID] = until
	}
	s.log.mu.Unlock()
	return nil
}
