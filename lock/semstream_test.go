package lock_test

import (
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/lock"
)

// A semaphore waiter behind two holders watches both (its window) and
// stops those watches when admitted. The semaphore keeps an idle watch on
// clientv3's stream of blocker watches, so that the stream outlives each
// wait: the waits after the first open no watch stream, where each used
// to open one (the stream closed with its last watch).
func TestSemWaitsKeepTheirWatchStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.semaphore(e.cli, "stream", 2)
	cli, c := e.rpcClient()
	ws := e.semaphore(cli, "stream", 2)
	const stream = "/etcdserverpb.Watch/Watch"
	var before map[string]int
	const waits = 4
	for i := range waits {
		h1, h2 := mustAcquire(t, s, 1), mustAcquire(t, s, 1)
		if i == 1 { // the first wait opens the streams
			before = c.Snapshot()
		}
		w := goAcquire(func() (*lock.Hold, error) { return ws.Acquire(ctxT(t, 10*time.Second), 1) })
		waitKeys(t, e.cli, s.Prefix(), 3)
		stillWaiting(t, w, "waiter behind two holders")
		mustUnlock(t, h1)
		wh := grantedHold(t, w, "waiter")
		if !wh.Token().Newer(h2.Token()) {
			t.Fatalf("waiter's token %v not above the holders' %v", wh.Token(), h2.Token())
		}
		mustUnlock(t, wh)
		mustUnlock(t, h2)
	}
	if n := c.Since(before)[stream]; n != 0 {
		t.Errorf("%d waits after the first opened %d watch streams, want 0", waits-1, n)
	}
}
