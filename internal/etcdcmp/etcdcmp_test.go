package etcdcmp

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// CreateRevision builds what clientv3's builders build.
func TestCreateRevisionMatchesClientv3(t *testing.T) {
	for _, tc := range []struct {
		key    string
		rev    int64
		prefix bool
	}{
		{"a/b", 0, false}, {"a/b", 42, false}, {"a/", 0, true}, {"a/", 7, true}, {"\xff", 0, true}, {"", 0, true},
	} {
		want := clientv3.Compare(clientv3.CreateRevision(tc.key), "=", tc.rev)
		if tc.prefix {
			want = want.WithPrefix()
		}
		got := CreateRevision(tc.key, tc.rev, tc.prefix)
		if !proto.Equal(got.GetCompare(), want.GetCompare()) {
			t.Errorf("CreateRevision(%q, %d, %v) = %v, want %v", tc.key, tc.rev, tc.prefix, got.GetCompare(), want.GetCompare())
		}
	}
}

func BenchmarkCreateRevisionPrefix(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = CreateRevision("ns/mutex/lock/", 0, true)
	}
}
