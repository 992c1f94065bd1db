package queue

import (
	"context"
	"reflect"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// A hub carries the own-key watches of every Primitive of one client (see
// dispatcher) on one gRPC watch stream of its own, served by two goroutines
// for all of them: one sends the creates and cancels, one receives and
// routes each response to its dispatcher by watch ID. A clientv3 watch
// costs a goroutine and its buffers per watch; a Primitive's own-key watch
// through the hub costs the client a map entry, so that a process can hold
// many locks at once at a small, flat cost each.
//
// A watch is created at the current revision, so that etcd's watcher starts
// synced (see the package doc). When the stream breaks, every watch is
// created again on a new one from the revision after the last it is known
// to have delivered, as clientv3 does: nothing is missed and nobody reads
// again, and etcd catches those watchers up on its 100 ms tick; only a
// compaction of that revision voids the dispatcher's registrations (their
// owners read again). The goroutines run while the hub has watches,
// and stop when the last Primitive of the client lets it go (release) or
// the client closes.

// A client whose Watcher is not clientv3's own (one wrapped by etcd's
// namespace package, say) gets no raw stream: the hub then opens each
// watch through that Watcher, with a goroutine per watch, so that the
// wrapper's key translation applies; those watches stay open until their
// Primitive closes.

// stockWatcher is the type of clientv3's own Watcher.
var stockWatcher = reflect.TypeOf(clientv3.NewWatchFromWatchClient(nil, nil))

// hubSweep is how often the hub closes the watches of idle dispatchers
// (see watchIdle).
const hubSweep = watchIdle / 3

// hubs are the hubs in use, one per client.
var hubs = struct {
	mu sync.Mutex
	m  map[*clientv3.Client]*hub
}{m: make(map[*clientv3.Client]*hub)}

// hubWatch is one watch of the hub.
type hubWatch struct {
	d      *dispatcher
	prefix string
	// next is the revision the watch is created at on a new stream: the one
	// after the last it is known to have delivered (0: current).
	next int64
	// stop, for a watch through a wrapped Watcher, ends its goroutine.
	stop context.CancelFunc
}

type hub struct {
	cli  *clientv3.Client
	lg   *zap.Logger
	refs int  // under hubs.mu
	raw  bool // the client's Watcher is clientv3's: one raw stream for all

	ctx    context.Context // cancelled when the last reference goes
	cancel context.CancelFunc
	wg     sync.WaitGroup // the run goroutine (which owns the receiver)

	mu      sync.Mutex
	running bool
	watches map[int64]*hubWatch // by watch ID
	nextID  int64
	out     []*pb.WatchRequest // to send on the current stream
	sent    []int64            // creates sent, awaiting their created reply, in order
	kick    chan struct{}      // cap 1: out has requests
	// endStream ends the current stream, as a break would (for tests).
	endStream context.CancelFunc
	// beforeReopen, if set, runs before a broken stream is replaced (for
	// tests).
	beforeReopen func()
}

// acquireHub returns cli's hub, with one more reference; release gives it
// back.
func acquireHub(cli *clientv3.Client, lg *zap.Logger) *hub {
	hubs.mu.Lock()
	defer hubs.mu.Unlock()
	h := hubs.m[cli]
	if h == nil {
		ctx, cancel := context.WithCancel(context.Background())
		h = &hub{cli: cli, lg: lg, ctx: ctx, cancel: cancel, watches: make(map[int64]*hubWatch), kick: make(chan struct{}, 1),
			raw: reflect.TypeOf(cli.Watcher) == stockWatcher}
		hubs.m[cli] = h
	}
	h.refs++
	return h
}

// release drops a reference; the last one stops the hub's goroutines and
// waits for them.
func (h *hub) release() {
	hubs.mu.Lock()
	h.refs--
	last := h.refs == 0
	if last {
		delete(hubs.m, h.cli)
	}
	hubs.mu.Unlock()
	if last {
		h.cancel()
		h.wg.Wait()
	}
}

// open creates a watch of the deletes under prefix from revision start (0:
// the current one; another only on a new stream, see run) for d, and returns its ID. The responses go to d's
// created, deleted and failed.
func (h *hub) open(d *dispatcher, prefix string, start int64) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextID++
	id := h.nextID
	w := &hubWatch{d: d, prefix: prefix, next: start}
	h.watches[id] = w
	if !h.raw {
		h.openWrappedLocked(id, w)
		return id
	}
	h.queueLocked(createReq(id, prefix, start))
	if !h.running && h.ctx.Err() == nil && h.cli.Ctx().Err() == nil {
		h.running = true
		h.wg.Add(1)
		go h.run()
	}
	return id
}

// drop cancels the watch id; its dispatcher hears nothing more of it.
func (h *hub) drop(id int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.watches[id]; !ok {
		return
	}
	w := h.watches[id]
	delete(h.watches, id)
	if w.stop != nil {
		w.stop()
		return
	}
	h.queueLocked(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}})
}

func (h *hub) queueLocked(r *pb.WatchRequest) {
	h.out = append(h.out, r)
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func createReq(id int64, prefix string, start int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key:           []byte(prefix),
		RangeEnd:      []byte(clientv3.GetPrefixRangeEnd(prefix)),
		StartRevision: start,
		Filters:       []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT},
		WatchId:       id,
	}}}
}

// run keeps a stream open while the hub has watches: it sends the queued
// requests, and, when the stream breaks, opens another and creates every
// watch again from its next revision.
func (h *hub) run() {
	defer h.wg.Done()
	b := newBackoff()
	for {
		healthy := h.serveStream()
		h.mu.Lock()
		if len(h.watches) == 0 || h.ctx.Err() != nil || h.cli.Ctx().Err() != nil {
			h.running = false
			// The client is closed: no watch will deliver again, which
			// their dispatchers' registrants must learn (they then see
			// the client closed).
			ended := h.watches
			h.watches = make(map[int64]*hubWatch)
			h.mu.Unlock()
			for id, w := range ended {
				w.d.failed(id)
			}
			return
		}
		// A new stream: create every watch again, from where it was.
		h.out, h.sent = h.out[:0], h.sent[:0]
		for id, w := range h.watches {
			h.out = append(h.out, createReq(id, w.prefix, w.next))
		}
		reopen := h.beforeReopen
		h.mu.Unlock()
		if reopen != nil {
			reopen()
		}
		if healthy {
			b.Reset()
		}
		h.lg.Debug("reopening own-key watch stream")
		if b.Sleep(h.ctx) != nil {
			h.mu.Lock()
			h.running = false
			h.mu.Unlock()
			return
		}
	}
}

// serveStream opens a stream and serves it until it breaks, the hub stops,
// or it has no watch left; healthy says a response came.
func (h *hub) serveStream() (healthy bool) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(h.ctx))
	defer cancel()
	h.mu.Lock()
	h.endStream = cancel
	h.mu.Unlock()
	stream, err := pb.NewWatchClient(h.cli.ActiveConnection()).Watch(ctx, grpc.WaitForReady(true))
	if err != nil {
		return false
	}
	recvDone := make(chan bool, 1)
	go func() { recvDone <- h.receive(stream) }()
	defer func() {
		cancel()
		healthy = <-recvDone
	}()
	sweep := time.NewTicker(hubSweep)
	defer sweep.Stop()
	for {
		h.mu.Lock()
		out := h.out
		h.out = nil
		if len(h.watches) == 0 && len(out) == 0 {
			h.mu.Unlock()
			return
		}
		for _, r := range out {
			if c := r.GetCreateRequest(); c != nil {
				h.sent = append(h.sent, c.WatchId)
			}
		}
		h.mu.Unlock()
		for _, r := range out {
			if stream.Send(r) != nil {
				return
			}
		}
		select {
		case <-h.kick:
		case <-sweep.C:
			h.sweep()
		case <-ctx.Done():
			return
		case <-recvDone:
			recvDone <- true // for the deferred read; the stream broke
			return
		}
	}
}

// receive routes the stream's responses until it breaks; it reports
// whether any came.
func (h *hub) receive(stream pb.Watch_WatchClient) bool {
	any := false
	for {
		wr, err := stream.Recv()
		if err != nil {
			return any
		}
		any = true
		h.route(wr)
	}
}

// route hands one response to its watch's dispatcher.
func (h *hub) route(wr *pb.WatchResponse) {
	rev := wr.GetHeader().GetRevision()
	h.mu.Lock()
	id := wr.WatchId
	if wr.Created {
		// Creates are answered in order; a refused one carries no ID.
		if len(h.sent) == 0 {
			h.mu.Unlock()
			return
		}
		id = h.sent[0]
		h.sent = h.sent[1:]
	}
	w := h.watches[id]
	if w == nil {
		h.mu.Unlock()
		return // dropped since
	}
	failed := wr.Canceled || wr.CompactRevision != 0 || (wr.Created && wr.WatchId != id)
	switch {
	case failed:
		delete(h.watches, id)
	case wr.Created && (w.next == 0 || rev < w.next):
		// At the current revision (or just after it): everything after rev
		// is delivered.
		w.next = rev + 1
	}
	if n := len(wr.Events); n > 0 {
		w.next = max(w.next, wr.Events[n-1].Kv.ModRevision+1)
	}
	d := w.d
	h.mu.Unlock()
	switch {
	case failed:
		h.lg.Debug("own-key watch ended", zap.String("prefix", w.prefix), zap.String("reason", wr.CancelReason), zap.Int64("compacted", wr.CompactRevision))
		d.failed(id)
	case wr.Created:
		d.created(id, rev)
	case len(wr.Events) > 0:
		d.deleted(id, wr.Events)
	}
}

// openWrappedLocked opens the watch id through the client's Watcher, on a
// goroutine of its own that routes its responses like route; clientv3
// resumes it after a break.
func (h *hub) openWrappedLocked(id int64, w *hubWatch) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(h.ctx))
	w.stop = cancel
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer cancel()
		d := w.d
		created := false
		for wr := range h.cli.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify()) {
			if wr.Err() != nil || wr.Canceled {
				break
			}
			if wr.Created && !created {
				created = true
				d.created(id, wr.Header.Revision)
			}
			if len(wr.Events) > 0 {
				evs := make([]*mvccpb.Event, len(wr.Events))
				for i, ev := range wr.Events {
					evs[i] = (*mvccpb.Event)(ev)
				}
				d.deleted(id, evs)
			}
		}
		h.mu.Lock()
		live := h.watches[id] == w
		if live {
			delete(h.watches, id)
		}
		h.mu.Unlock()
		if live { // ended, not dropped
			d.failed(id)
		}
	}()
}

// sweep closes the watches of dispatchers idle for watchIdle.
func (h *hub) sweep() {
	h.mu.Lock()
	ds := make([]*dispatcher, 0, len(h.watches))
	for _, w := range h.watches {
		ds = append(ds, w.d)
	}
	h.mu.Unlock()
	for _, d := range ds {
		d.closeIfIdle()
	}
}
