package lease

import (
	"context"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// renewStream is a keeper's lease keep-alive stream: one gRPC stream,
// opened at the first renewal and again after it fails, that carries every
// renewal of the lease. clientv3's KeepAliveOnce opens a stream per
// renewal, and clientv3 logs in again (with password auth: an Authenticate
// request, a bcrypt check and a raft write at etcd) for each stream it
// opens; over one stream a renewal is one request and its answer. A
// renewStream is used by one renewal at a time (a keeper has at most one
// in flight) and owns no goroutine; the keeper's context ends its stream.
type renewStream struct {
	cli    *clientv3.Client
	lg     *zap.Logger     // renewals at Debug level: when, from which member, in which raft term
	ctx    context.Context // the keeper's: ends the stream at Stop
	s      pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc // ends s
}

// renew sends one keep-alive request for id and waits for its answer, until
// ctx ends (which ends the stream too: a stream whose answer never came
// cannot be reused). It returns the time the request was sent and the TTL
// etcd granted, 0 when it does not know the lease.
func (r *renewStream) renew(ctx context.Context, id clientv3.LeaseID) (time.Time, int64, error) {
	for {
		fresh := r.s == nil
		if fresh {
			var sctx context.Context
			sctx, r.cancel = context.WithCancel(r.ctx)
			stop := context.AfterFunc(ctx, r.cancel)
			// Waits for a connection as KeepAliveOnce does; the stream
			// interceptor logs in first, when the client has a password.
			s, err := clientv3.RetryLeaseClient(r.cli).LeaseKeepAlive(sctx, grpc.WaitForReady(true))
			stop()
			if err != nil {
				r.close()
				return time.Now(), 0, clientv3.ContextError(ctx, err)
			}
			r.s = s
		}
		stop := context.AfterFunc(ctx, r.cancel)
		sent := time.Now()
		resp, err := r.roundTrip(id)
		if !stop() { // ctx ended: the stream is being cut
			r.close()
			if err != nil {
				return sent, 0, clientv3.ContextError(ctx, err)
			}
		}
		if err == nil {
			if ce := r.lg.Check(zap.DebugLevel, "lease renewal answered"); ce != nil {
				ce.Write(zap.Time("sent", sent), zap.Duration("rtt", time.Since(sent)), zap.Int64("ttl", resp.TTL),
					zap.String("member", fmt.Sprintf("%x", resp.Header.GetMemberId())), zap.Uint64("term", resp.Header.GetRaftTerm()),
					zap.Int64("rev", resp.Header.GetRevision()))
			}
			return sent, resp.TTL, nil
		}
		if ce := r.lg.Check(zap.DebugLevel, "lease renewal failed"); ce != nil {
			ce.Write(zap.Time("sent", sent), zap.Duration("after", time.Since(sent)), zap.Bool("fresh", fresh), zap.Error(err))
		}
		r.close()
		if fresh || ctx.Err() != nil {
			return sent, 0, clientv3.ContextError(ctx, err)
		}
		// A stream that had served renewals broke: its server went away,
		// or the login it carries is no longer valid (an expired token, a
		// change of users). Open another and send again at once, as
		// KeepAliveOnce, with a stream per request, would have.
	}
}

func (r *renewStream) roundTrip(id clientv3.LeaseID) (*pb.LeaseKeepAliveResponse, error) {
	if err := r.s.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
		return nil, err
	}
	return r.s.Recv()
}

// close ends the stream, if any.
func (r *renewStream) close() {
	if r.cancel != nil {
		r.cancel()
	}
	r.s, r.cancel = nil, nil
}
