package cmdline

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errAborted is what the requests of a client get once its aborter gave
// up on etcd. Its code is one clientv3 does not retry.
var errAborted = status.Error(codes.Aborted, "etcdlock: gave up waiting for etcd")

// aborter ends every request of a client at once, in flight or later,
// when abort is called. Closing the client would not do: clientv3 retries
// a request its connection dropped until the request's own context ends,
// so a lock's Close on a dead etcd would still take its 5 s bounds.
// Installed by dialOptions; safe for concurrent use.
type aborter struct {
	ctx   context.Context
	abort context.CancelFunc
}

func newAborter() *aborter {
	ctx, cancel := context.WithCancel(context.Background())
	return &aborter{ctx: ctx, abort: cancel}
}

// dialOptions installs a on a client's connection. clientv3 puts its retry
// interceptor first, so these see every attempt.
func (a *aborter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(a.unary),
		grpc.WithChainStreamInterceptor(a.stream),
	}
}

func (a *aborter) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if a.ctx.Err() != nil {
		return errAborted
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(a.ctx, cancel)
	defer stop()
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err != nil && a.ctx.Err() != nil {
		return errAborted
	}
	return err
}

func (a *aborter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if a.ctx.Err() != nil {
		return nil, errAborted
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(a.ctx, cancel)
	end := func() { stop(); cancel() }
	cs, err := streamer(ctx, desc, cc, method, append(opts, grpc.OnFinish(func(error) { end() }))...)
	if err != nil {
		end()
		if a.ctx.Err() != nil {
			return nil, errAborted
		}
		return nil, err
	}
	return cs, nil
}
