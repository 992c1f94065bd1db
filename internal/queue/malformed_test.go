package queue

import (
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// CheckTxn refuses an answer without a header, with another number of
// responses than the branch's operations, or with a non-range response
// where a range is read: what a corrupted stream can deliver (an empty
// message decodes as a TxnResponse with nothing in it).
func TestCheckTxn(t *testing.T) {
	rng := &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{}}}
	put := &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{}}}
	hdr := &pb.ResponseHeader{Revision: 7}
	for _, tc := range []struct {
		name      string
		resp      *clientv3.TxnResponse
		n, ranges int
		ok        bool
	}{
		{"put and a read", &clientv3.TxnResponse{Header: hdr, Responses: []*pb.ResponseOp{put, rng}}, 2, 1, true},
		{"no operation asked", &clientv3.TxnResponse{Header: hdr}, 0, 0, true},
		{"empty message", &clientv3.TxnResponse{}, 1, 0, false},
		{"succeeded, nothing in it", &clientv3.TxnResponse{Header: hdr, Succeeded: true}, 1, 1, false},
		{"one response short", &clientv3.TxnResponse{Header: hdr, Responses: []*pb.ResponseOp{put}}, 2, 1, false},
		{"one too many", &clientv3.TxnResponse{Header: hdr, Responses: []*pb.ResponseOp{put, rng, rng}}, 2, 1, false},
		{"a put where a read is read", &clientv3.TxnResponse{Header: hdr, Responses: []*pb.ResponseOp{put, put}}, 2, 1, false},
		{"an empty op", &clientv3.TxnResponse{Header: hdr, Responses: []*pb.ResponseOp{{}}}, 1, 0, false},
	} {
		err := CheckTxn(tc.resp, tc.n, tc.ranges)
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: CheckTxn = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
