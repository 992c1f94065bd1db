package queue

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/backoff"
	"github.com/etcdlock/etcdlock/internal/etcdcmp"
	"github.com/etcdlock/etcdlock/internal/keys"
)

// Release requests. Any client may ask a hold to release: it puts the
// hold's request key (RequestKey), guarded by the hold key's create
// revision and lease, on the hold's own lease, so that the request goes
// with the hold's lease if its process dies. The request keys live under
// "<namespace>revoke/", beside the queues and under none of their
// prefixes (a kind's prefix is "<namespace><kind>/"), so no rule, Inspect
// or status ever reads one as a waiter. Every release of a hold deletes its
// request key in the same Txn as its own key (an extra op, no extra round
// trip), whether or not a request was made.

// requestDir is the directory of release requests in a namespace; no kind
// of queue has this name.
const requestDir = "revoke/"

// RequestKey returns the key of a release request for the hold whose key
// is key, in namespace ns (see keys.Namespace): key with requestDir
// inserted after ns.
func RequestKey(ns, key string) string {
	ns = keys.Namespace(ns)
	return ns + requestDir + strings.TrimPrefix(key, ns)
}

// requestValue is a request's value: the create revision of the hold it
// names, a space, and the requester's description. A request key left by
// a hold that was lost without release (its key deleted by another client)
// names that hold's revision, so a later hold reusing the key's name
// ignores it.
func requestValue(rev int64, from string) string {
	return strconv.FormatInt(rev, 10) + " " + from
}

// requestFor reports whether kv is a request naming the hold of revision
// rev.
func requestFor(kv *mvccpb.KeyValue, rev int64) bool {
	r, _, _ := strings.Cut(string(kv.Value), " ")
	n, err := strconv.ParseInt(r, 10, 64)
	return err == nil && n == rev
}

// Target is a hold to ask to release: its token and its key's lease.
type Target struct {
	Token fencing.Token
	Lease clientv3.LeaseID
}

// RequestRelease asks each target to release, in one Txn: for each, a put
// of its request key on its lease, guarded by its key's create revision
// and lease (so the put can never revive a request for a hold that ended,
// nor fail for a lease that is gone). It returns which targets were still
// held, and so asked. One round trip.
func RequestRelease(ctx context.Context, cli *clientv3.Client, ns string, targets []Target, from string) ([]bool, error) {
	ops := make([]clientv3.Op, len(targets))
	for i, t := range targets {
		ops[i] = clientv3.OpTxn(
			[]clientv3.Cmp{t.Token.Cmp(), clientv3.Compare(clientv3.LeaseValue(t.Token.Key), "=", t.Lease)},
			[]clientv3.Op{clientv3.OpPut(RequestKey(ns, t.Token.Key), requestValue(t.Token.Revision, from), clientv3.WithLease(t.Lease))},
			nil)
	}
	resp, err := cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	asked := make([]bool, len(targets))
	for i, r := range resp.Responses {
		asked[i] = r.GetResponseTxn().GetSucceeded()
	}
	return asked, nil
}

// requests is a hold's release-request watch, started by the first call
// of ReleaseRequested.
type requests struct {
	once sync.Once
	ch   chan struct{}
	wg   sync.WaitGroup // the watch goroutine; finish waits for it
}

// releaseOps are the ops of a release's Txn: delete the key (or, with
// keep set, move it to the lease keep, keeping its value and create
// revision), and the rest of the release (releaseWith).
func (h *Hold) releaseOps(keep clientv3.LeaseID) []clientv3.Op {
	own := clientv3.OpDelete(h.token.Key)
	if keep != 0 {
		own = clientv3.OpPut(h.token.Key, "", clientv3.WithIgnoreValue(), clientv3.WithLease(keep))
	}
	return append([]clientv3.Op{own}, h.releaseWith()...)
}

// releaseWith are the ops that go with a release's delete of the key,
// whoever sends it (the release, or the lease keeper after the release's
// Txn failed): delete its release request and, with lock-delay, its
// holding record, and mark the end clean.
func (h *Hold) releaseWith() []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpDelete(RequestKey(h.q.Namespace, h.token.Key))}
	ops = append(ops, h.q.heldDelete(h.token.Key)...)                             // with lock-delay
	return append(ops, h.q.markerOps(h.token.Key, h.token.Revision, h.k.ID())...) // with lock-delay
}

// Park ends the hold like Release, but instead of deleting the key it
// moves it to the lease keep, in one Txn guarded like Release's: the key
// keeps its value and create revision, so the queue's order and the token
// stand, and it goes when keep expires (or is revoked). It returns
// Release's errors, and etcd's lease-not-found error if keep is gone.
func (h *Hold) Park(ctx context.Context, keep clientv3.LeaseID) error {
	return h.q.pub.Err(h.release(ctx, keep))
}

// ReleaseRequested returns a channel closed when some client has asked
// this hold to release (RequestRelease). The first call starts a watch of
// the hold's request key, from the key's create revision on, so no
// request made since the grant is missed; it costs no round trip (a
// watch's creation takes no raft round), one read if that revision was
// compacted. The watch ends with the hold; a request is never withdrawn.
func (h *Hold) ReleaseRequested() <-chan struct{} {
	h.req.once.Do(func() {
		h.req.ch = make(chan struct{})
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.stopped || h.lost != nil {
			return // ended: no request can come, and finish may be waiting
		}
		h.req.wg.Add(1)
		go h.watchRequests()
	})
	return h.req.ch
}

// watchRequests closes h.req.ch when a release request for h appears, and
// ends with the hold. After a request, it stays until the hold ends, and
// deletes the request if the hold was lost rather than released (a
// release deletes it itself).
func (h *Hold) watchRequests() {
	defer h.req.wg.Done()
	key := RequestKey(h.q.Namespace, h.token.Key)
	seen := h.waitRequest(key)
	if seen == 0 {
		return
	}
	close(h.req.ch)
	<-h.ctx.Done()
	h.mu.Lock()
	lost := h.lost != nil // a release after a loss deletes nothing
	h.mu.Unlock()
	if !lost {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
	defer cancel()
	_, _ = h.q.Client.Txn(ctx).If(etcdcmp.CreateRevision(key, seen, false)).Then(clientv3.OpDelete(key)).Commit()
}

// waitRequest waits for a request for h at key, and returns its key's
// create revision, or 0 if the hold ended first.
func (h *Hold) waitRequest(key string) int64 {
	ctx := h.ctx
	b := backoff.New(20*time.Millisecond, time.Second)
	next := h.token.Revision // the request key is created after the hold's key
	for attempt := 0; ; attempt++ {
		if attempt > 0 && b.Sleep(ctx) != nil {
			return 0
		}
		wctx, cancel := context.WithCancel(ctx)
		// A watch from a revision the server has passed is caught up on
		// etcd's 100 ms tick: a request may reach the holder that much
		// later, which a request to release can afford.
		wch := h.q.Client.Watch(wctx, key, clientv3.WithRev(next), clientv3.WithFilterDelete())
		var compacted bool
		for wr := range wch {
			if wr.CompactRevision != 0 {
				compacted = true
				break
			}
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if requestFor(ev.Kv, h.token.Revision) {
					cancel()
					return ev.Kv.CreateRevision
				}
				next = ev.Kv.ModRevision + 1
			}
		}
		cancel()
		if ctx.Err() != nil {
			return 0
		}
		if compacted {
			// The history since next is gone: read the key as it is now,
			// and watch from after that read.
			resp, err := h.q.Client.Get(ctx, key)
			if err != nil {
				continue // after a pause, or ends with the hold
			}
			if len(resp.Kvs) > 0 && requestFor(resp.Kvs[0], h.token.Revision) {
				return resp.Kvs[0].CreateRevision
			}
			next = resp.Header.Revision + 1
			b.Reset()
		}
	}
}
