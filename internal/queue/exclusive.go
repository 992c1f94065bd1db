package queue

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/etcdcmp"
)

// Exclusive is the rule of a mutex and of an election: the oldest key is
// admitted, and a waiter waits for the key just ahead of it.
type Exclusive struct{}

// Reads reads the key just older than the waiter's. At enqueue the waiter's
// key is the newest, so the two newest keys are read: the waiter's and the
// one ahead.
func (Exclusive) Reads(prefix string, maxRev int64) []clientv3.Op {
	if maxRev == 0 {
		return []clientv3.Op{clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(2))}
	}
	return []clientv3.Op{clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithMaxCreateRev(maxRev-1), clientv3.WithSerializable(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(1))}
}

// Judge admits the waiter when no older key exists.
func (Exclusive) Judge(self Entry, resps []*pb.RangeResponse) Verdict {
	older := Older(self, resps[0].Kvs, nil)
	if len(older) == 0 {
		return Verdict{Admitted: true}
	}
	return Verdict{Blockers: older[:1]}
}

// TryIf holds when no key exists under prefix: etcd compares every key in
// the range, and an empty range compares as a key with create revision 0.
func (Exclusive) TryIf(prefix string) []clientv3.Cmp {
	return []clientv3.Cmp{etcdcmp.CreateRevision(prefix, 0, true)}
}
