package queue

import (
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdKey is the waiter key of etcd's concurrency.Mutex (and etcdctl
// lock) for lease under prefix: the prefix and the lease ID in lower-case
// hex, unpadded. Set as a Queue's KeyName, with Exclusive as its rule and
// "<pfx>/" as its prefix, it queues with etcd's recipe on the same name.
func EtcdKey(prefix string, lease clientv3.LeaseID) string {
	return fmt.Sprintf("%s%x", prefix, int64(lease))
}
