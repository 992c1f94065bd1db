// Package etcdcmp builds the etcd comparisons of the lock paths without the
// copies clientv3's builders make: in etcd 3.7 clientv3.Compare, WithPrefix
// and WithRange each clone the comparison through protobuf reflection, some
// microseconds apiece on paths that run at every Lock and Unlock.
package etcdcmp

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// CreateRevision returns the comparison "create revision = rev" of key, or
// of every key under key when prefix is set (an empty range compares as
// one key with create revision 0). It is what
// clientv3.Compare(clientv3.CreateRevision(key), "=", rev), with
// .WithPrefix() if prefix, builds.
func CreateRevision(key string, rev int64, prefix bool) clientv3.Cmp {
	c := clientv3.CreateRevision(key) // a fresh message, not a copy
	pc := c.GetCompare()
	pc.Result = pb.Compare_EQUAL
	pc.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: rev}
	if prefix {
		pc.RangeEnd = []byte(clientv3.GetPrefixRangeEnd(key))
	}
	return c
}
