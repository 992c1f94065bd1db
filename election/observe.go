package election

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/backoff"
)

// Observe returns a channel that receives the current leader (the zero
// Leader for none) and then every change of leader or value, in order,
// never a candidate that does not lead and never going back in time (after
// a watch error it may skip changes). It is closed, once its goroutine has
// stopped, when ctx ends or the Election or etcd client is closed. Receive
// promptly: the goroutine waits for each send.
func (e *Election) Observe(ctx context.Context) <-chan Leader {
	ch := make(chan Leader)
	// Derived here, not in the goroutine, so that a nil ctx panics in the
	// caller, as context.WithCancel does.
	ctx, cancel := context.WithCancel(ctx)
	// Add under mu, and never once Close has set closed: Close's wg.Wait
	// must not race with an Add.
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		cancel()
		close(ch)
		return ch
	}
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		defer close(ch)
		defer cancel()
		stopClose := context.AfterFunc(e.p.CloseContext(), cancel)
		defer stopClose()
		// A closed client fails every read and watch at once: without
		// this, the loop would retry every second until ctx ends.
		stopClient := context.AfterFunc(e.p.Q.Client.Ctx(), cancel)
		defer stopClient()
		o := observer{e: e, ch: ch}
		o.run(ctx)
	}()
	return ch
}

type observer struct {
	e      *Election
	ch     chan<- Leader
	cur    Leader
	sent   bool
	last   Leader // last sent
	maxRev int64  // highest term sent
}

// emit sends o.cur if it differs from the last sent and does not go back in
// time. It returns false when ctx ended.
func (o *observer) emit(ctx context.Context) bool {
	if o.sent && o.cur == o.last {
		return true
	}
	if !o.cur.IsZero() && o.cur.Token.Revision < o.maxRev {
		return true // an older term, seen through a stale read: skip
	}
	select {
	case o.ch <- o.cur:
		o.sent, o.last = true, o.cur
		o.maxRev = max(o.maxRev, o.cur.Token.Revision)
		return true
	case <-ctx.Done():
		return false
	}
}

func (o *observer) run(ctx context.Context) {
	b := backoff.New(20*time.Millisecond, time.Second)
	for ctx.Err() == nil {
		// Back off (to 1 s) while etcd fails us, e.g. without a leader;
		// observe resets the pause once it has read the leader.
		if !o.observe(ctx, b) && b.Sleep(ctx) != nil {
			return
		}
	}
}

// observe opens a watch on the prefix at the server's current revision,
// reads the leader after the watch is created (and then resets b), and
// follows the watch's events. It returns false when the watch broke or could not be opened, or
// the read failed: the leader must then be read again. A watch started from
// the read's revision instead would usually start at a revision the server
// has passed, and etcd catches such watchers up only on a 100 ms tick.
func (o *observer) observe(ctx context.Context, b *backoff.Backoff) bool {
	cli, prefix := o.e.p.Q.Client, o.e.p.Q.Prefix
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if wr, ok := <-wch; !ok || wr.Err() != nil || !wr.Created {
		return false
	}
	// A linearizable read: its revision is at least the watch's, so the
	// events after it are all in the watch.
	resp, err := cli.Get(ctx, prefix, clientv3.WithFirstCreate()...)
	if err != nil || resp.Header == nil { // no header: a corrupted answer
		return false
	}
	b.Reset()
	o.cur = Leader{}
	if len(resp.Kvs) > 0 {
		o.cur = leaderOf(resp.Kvs[0])
	}
	if !o.emit(ctx) {
		return true
	}
	return o.follow(ctx, wch, resp.Header.Revision)
}

// follow applies the watch's events after revision read. It returns false
// when the watch broke and the leader must be read again.
func (o *observer) follow(ctx context.Context, wch clientv3.WatchChan, read int64) bool {
	cli, prefix := o.e.p.Q.Client, o.e.p.Q.Prefix
	for wr := range wch {
		if wr.Err() != nil {
			return false
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision <= read {
				continue // in the read already
			}
			key := string(ev.Kv.Key)
			switch {
			case ev.Type == mvccpb.PUT && ev.IsCreate():
				if !o.cur.IsZero() {
					continue // a newer candidate: it waits
				}
				o.cur = leaderOf(ev.Kv)
			case ev.Type == mvccpb.PUT && key == o.cur.Token.Key:
				o.cur.Value = string(ev.Kv.Value) // Proclaim
			case ev.Type == mvccpb.DELETE && key == o.cur.Token.Key:
				// Who leads right after this delete? Read at its revision,
				// so a batch of events never makes a waiting candidate look
				// like the leader.
				r, err := cli.Get(ctx, prefix, append(clientv3.WithFirstCreate(), clientv3.WithRev(ev.Kv.ModRevision))...)
				if err != nil {
					return false
				}
				o.cur = Leader{}
				if len(r.Kvs) > 0 {
					o.cur = leaderOf(r.Kvs[0])
				}
			default:
				continue
			}
			if !o.emit(ctx) {
				return true
			}
		}
	}
	return ctx.Err() != nil
}
