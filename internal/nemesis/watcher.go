package nemesis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Event is one change of a key under the watched prefix, as the healthy
// watcher saw it.
type Event struct {
	Rev    int64  `json:"rev"`
	Delete bool   `json:"delete,omitempty"`
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Lease  int64  `json:"lease,omitempty"`
	Create int64  `json:"create,omitempty"` // create revision (puts)
	At     int64  `json:"at"`               // ns since start when received
}

// watcher follows every change under a prefix from a start revision on,
// through a client straight to the cluster (no proxy, no fault), and
// reopens its watch after errors from the next revision it has not seen.
// A compaction of a revision it has not read yet is a gap: the history is
// then incomplete and the run invalid.
type watcher struct {
	cli    *clientv3.Client
	prefix string
	start  time.Time

	consumed atomic.Int64 // every event at or below it has been received

	mu     sync.Mutex
	events []Event
	gap    error

	cancel context.CancelFunc
	done   chan struct{}
	wctx   context.Context
}

func startWatcher(cli *clientv3.Client, prefix string, from int64, start time.Time) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cli: cli, prefix: prefix, start: start, cancel: cancel, done: make(chan struct{}),
		wctx: clientv3.WithRequireLeader(ctx)}
	w.consumed.Store(from - 1)
	go w.run(from)
	return w
}

func (w *watcher) run(next int64) {
	defer close(w.done)
	for w.wctx.Err() == nil {
		wch := w.cli.Watch(w.wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(next))
		for wr := range wch {
			if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
				w.mu.Lock()
				w.gap = fmt.Errorf("watch history has a gap: revisions from %d compacted (at %d)", next, wr.CompactRevision)
				w.mu.Unlock()
				return
			}
			if wr.Err() != nil {
				break // reopen from next
			}
			at := int64(time.Since(w.start))
			if len(wr.Events) > 0 {
				evs := make([]Event, 0, len(wr.Events))
				for _, ev := range wr.Events {
					e := Event{Rev: ev.Kv.ModRevision, Key: string(ev.Kv.Key), At: at}
					if ev.Type == mvccpb.DELETE {
						e.Delete = true
					} else {
						e.Value, e.Lease, e.Create = string(ev.Kv.Value), ev.Kv.Lease, ev.Kv.CreateRevision
					}
					evs = append(evs, e)
					next = ev.Kv.ModRevision + 1
				}
				w.mu.Lock()
				w.events = append(w.events, evs...)
				w.mu.Unlock()
				w.consumed.Store(next - 1)
			} else if wr.IsProgressNotify() && wr.Header.Revision >= next {
				next = wr.Header.Revision + 1
				w.consumed.Store(wr.Header.Revision)
			}
		}
		if w.wctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Consumed returns the revision up to which every event has been received:
// compacting at it loses nothing the watcher has not read.
func (w *watcher) Consumed() int64 { return w.consumed.Load() }

// waitFor waits until every event at or below rev has been received.
func (w *watcher) waitFor(ctx context.Context, rev int64) error {
	for w.consumed.Load() < rev {
		if err := w.err(); err != nil {
			return err
		}
		_ = w.cli.RequestProgress(w.wctx)
		select {
		case <-ctx.Done():
			return fmt.Errorf("watcher at revision %d, waiting for %d: %w", w.consumed.Load(), rev, ctx.Err())
		case <-w.done:
			if err := w.err(); err != nil {
				return err
			}
			return errors.New("watcher stopped")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// catchUp waits until the watcher has seen every change made so far.
func (w *watcher) catchUp(ctx context.Context) error {
	resp, err := w.cli.Get(ctx, "\x00", clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	return w.waitFor(ctx, resp.Header.Revision)
}

func (w *watcher) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gap
}

// Events returns the events received so far.
func (w *watcher) Events() []Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Event(nil), w.events...)
}

func (w *watcher) stop() {
	w.cancel()
	<-w.done
}
