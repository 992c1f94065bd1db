package election_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/integration"
)

// TestWatchesStartSynced: campaigns that wait and hand over, and an
// observer following them, never open a watch at a revision the server
// has passed (etcd would catch it up only on its 100 ms tick), while
// unrelated writes move the revision on. lock's test of the same name
// shows the sampler catches such a watch.
func TestWatchesStartSynced(t *testing.T) {
	e := newEnv(t)
	if n, err := integration.UnsyncedWatchers(); err != nil {
		t.Fatal(err)
	} else if n != 0 {
		t.Skipf("%d unsynced watchers before the test: another test's", n)
	}
	stop := integration.SampleUnsyncedWatchers(t)
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { // unrelated writes, so that the revision keeps moving
		for ctx.Err() == nil {
			if _, err := e.cli.Put(ctx, e.ns+"noise", "x"); err != nil {
				return
			}
		}
	})
	obs := e.election(e.client())
	changes := obs.Observe(ctx)
	bg.Go(func() {
		for range changes {
		}
	})
	var wg sync.WaitGroup
	for i := range 3 {
		el := e.election(e.client())
		wg.Go(func() {
			for range 20 {
				term, err := el.Campaign(ctxT(t, 30*time.Second), "c")
				if err != nil {
					t.Errorf("candidate %d: %v", i, err)
					return
				}
				if err := term.Resign(ctxT(t, 5*time.Second)); err != nil {
					t.Errorf("candidate %d: resign: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	cancel()
	bg.Wait()
	if most := stop(); most != 0 {
		t.Errorf("the server had %d unsynced watchers: a watch started at a past revision", most)
	}
	if _, err := e.cli.Delete(ctxT(t, 5*time.Second), e.ns+"noise"); err != nil {
		t.Fatal(err)
	}
}
