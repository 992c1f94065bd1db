package authtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// Holds of a prefix user over TLS learn that their keys were deleted from
// outside: the own-key watches that many holds of one client share (one
// watch stream of the library's own, beside clientv3's) carry the client's
// credentials, and are allowed on the user's prefix.
func TestHoldsNoticeDeletesAsPrefixUser(t *testing.T) {
	s := integration.NewServer(t, integration.WithTLS(), integration.WithAuth(), integration.WithoutFsync())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := s.Client(t)
	const ns = "app/"
	if err := integration.AddPrefixUser(ctx, root, "app", "app-pw", ns); err != nil {
		t.Fatal(err)
	}
	cli := userClient(t, s, "app", "app-pw")
	var hs []*lock.Hold
	for i := range 3 {
		m, err := lock.NewMutex(cli, fmt.Sprintf("m%d", i), lock.WithNamespace(ns))
		if err != nil {
			t.Fatal(err)
		}
		defer mustClose(t, m)
		h, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	time.Sleep(100 * time.Millisecond) // past the delay before a hold admitted at once registers its key
	for _, h := range hs {
		if _, err := root.Delete(ctx, h.Token().Key); err != nil {
			t.Fatal(err)
		}
		select {
		case <-h.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("hold %v: Done not closed 10s after its key was deleted", h.Token())
		}
		if err := h.Err(); !errors.Is(err, lock.ErrDeleted) {
			t.Errorf("hold %v: Err() = %v, want ErrDeleted", h.Token(), err)
		}
	}
}
