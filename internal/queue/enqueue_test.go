package queue

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EnqueueIf drops the comparison that the waiter's key is absent only when
// another one already requires every key of a range holding it to have
// create revision 0.
func TestEnqueueIf(t *testing.T) {
	const key = "ns/q/w/k1"
	absent := func(k string) clientv3.Cmp { return clientv3.Compare(clientv3.CreateRevision(k), "=", 0) }
	for _, tc := range []struct {
		name  string
		tryIf []clientv3.Cmp
		fold  bool
	}{
		{"prefix holding the key", []clientv3.Cmp{absent("ns/q/").WithPrefix()}, true},
		{"the key itself", []clientv3.Cmp{absent(key)}, true},
		{"from the key on", []clientv3.Cmp{absent("ns/q/w/").WithRange("\x00")}, true},
		{"another prefix", []clientv3.Cmp{absent("ns/q/r/").WithPrefix()}, false},
		{"range ending at the key", []clientv3.Cmp{absent("ns/q/").WithRange(key)}, false},
		{"another key", []clientv3.Cmp{absent("ns/q/w/k")}, false},
		{"not zero", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("ns/q/"), "=", 5).WithPrefix()}, false},
		{"not equal", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("ns/q/"), "<", 1).WithPrefix()}, false},
		{"a version", []clientv3.Cmp{clientv3.Compare(clientv3.Version("ns/q/"), "=", 0).WithPrefix()}, false},
		{"second of two", []clientv3.Cmp{absent("ns/q/r/").WithPrefix(), absent("ns/q/").WithPrefix()}, true},
	} {
		got := EnqueueIf(tc.tryIf, key)
		want := len(tc.tryIf)
		if !tc.fold {
			want++
		}
		if len(got) != want {
			t.Errorf("%s: %d comparisons, want %d", tc.name, len(got), want)
			continue
		}
		if !tc.fold {
			if c := got[0].GetCompare(); string(c.Key) != key || len(c.RangeEnd) != 0 {
				t.Errorf("%s: first comparison %v, want %s absent", tc.name, c, key)
			}
		}
	}
}
