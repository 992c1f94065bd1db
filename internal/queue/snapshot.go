package queue

import (
	"bytes"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// JudgeSnapshot returns rule's verdict for self, a key of the queue at
// prefix, given snapshot, every key under base read at one revision: Judge
// is given what the rule's own confirm Reads would have read at that
// revision. It is how a status reader applies the rule a key's own acquire
// applies. A rule whose Reads leave base, or are not ranges, is a bug.
//
// Judge is told of all the older keys a read would return, even where the
// read has a limit: none of the rules' admissions depends on a limit, which
// only spares the enqueue Txn reading keys it need not know of.
func JudgeSnapshot(rule Rule, prefix, base string, self Entry, snapshot []*mvccpb.KeyValue) Verdict {
	reads := rule.Reads(prefix, self.Rev)
	resps := make([]*pb.RangeResponse, len(reads))
	baseEnd := []byte(clientv3.GetPrefixRangeEnd(base))
	for i, op := range reads {
		from, end := op.KeyBytes(), op.RangeBytes()
		if !op.IsGet() || bytes.Compare(from, []byte(base)) < 0 || len(end) == 0 ||
			bytes.Equal(end, []byte{0}) || bytes.Compare(end, baseEnd) > 0 {
			panic(fmt.Sprintf("queue: rule %T reads outside its queue's keys %s", rule, base))
		}
		r := &pb.RangeResponse{}
		for _, kv := range snapshot {
			if bytes.Compare(kv.Key, from) >= 0 && bytes.Compare(kv.Key, end) < 0 &&
				(op.MaxCreateRev() == 0 || kv.CreateRevision <= op.MaxCreateRev()) {
				r.Kvs = append(r.Kvs, kv)
			}
		}
		r.Count = int64(len(r.Kvs))
		resps[i] = r
	}
	return rule.Judge(self, resps)
}
