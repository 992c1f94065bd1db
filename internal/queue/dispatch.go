package queue

import (
	"context"
	"errors"
	"github.com/etcdlock/etcdlock/internal/lease"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// A dispatcher has one watch on a prefix, carried by its client's hub, and
// routes its deletes to the registrations of the keys under it: the
// Primitive's own keys of one lease (see keyWatches), registered by its
// waiters and holds. A wait or a hold thus opens no watch of its own: no
// created round trip, and, the watch being up since before the enqueue,
// no read after it. A registration signals its
// owner on a channel (a waiter), or calls it back on the hub's goroutine
// (a hold: no goroutine per hold).

// watchIdle is how long the dispatcher's watch stays open with nothing
// registered and no acquire begun, before it is closed to spare etcd a
// watcher; the next acquire reopens it.
const watchIdle = 30 * time.Second

// deleteLogCap bounds the deletes the dispatcher remembers for registrations
// that arrive after them (a waiter registers once its enqueue Txn has
// answered; the delete of a blocker may have been delivered before).
const deleteLogCap = 1024

// errDispatcherClosed is returned by waitUp once the Primitive is closed.
var errDispatcherClosed = errors.New("watch closed")

// dispatcher owns the watch of one prefix and routes its delete events to
// registrations. It is safe for concurrent use.
type dispatcher struct {
	cli    *clientv3.Client
	prefix string
	lg     *zap.Logger
	ctx    context.Context // cancelled at Close
	hub    *hub            // carries the watch; one reference, dropped at close

	mu      sync.Mutex
	closed  bool
	wid     int64                  // the hub's ID of the watch; 0: none open
	fails   int                    // watches refused in a row
	retryAt time.Time              // after a refusal: no watch opened before then
	up      bool                   // the watch delivers every delete after floor
	changed chan struct{}          // closed when up changes, if a waitUp made it
	floor   int64                  // while up: every delete after floor was routed, is logged, or will be
	last    time.Time              // last use
	few     []*interest            // the interests, while no more than maxFew (keys nil)
	keys    map[string][]*interest // the interests by key, beyond maxFew
	nsubs   int
	dels    map[string]int64 // key -> mod revision of its latest logged delete
	log     []logged         // ring of logged deletes, oldest at head
	head    int
	cbs     []*sub // signalled subs with callbacks, run once mu is released
}

type logged struct {
	key string
	rev int64
}

// sub is one registration: a waiter's own key and blockers, or a hold's key.
type sub struct {
	d      *dispatcher
	c      chan struct{} // signalled (cap 1) when an interest goes or the watch breaks
	cb     func(*sub)    // if set, called instead, outside the dispatcher's lock
	ins    []*interest   // ins[0] is the registrant's own key
	broken bool          // the watch broke: the registration is void
	rev    int64         // mod revision of the latest delete routed here
	gone   int64         // summed weight of the blockers gone
}

type interest struct {
	Entry
	s    *sub
	gone bool
}

func newDispatcher(ctx context.Context, cli *clientv3.Client, prefix string, lg *zap.Logger) *dispatcher {
	return &dispatcher{
		cli:    cli,
		prefix: prefix,
		lg:     lg,
		ctx:    ctx,
		hub:    acquireHub(cli, lg),
	}
}

// kickLocked records a use, and opens the watch, at the current revision,
// if it is not open.
func (d *dispatcher) kickLocked() {
	d.last = time.Now()
	if d.wid != 0 || d.closed || d.ctx.Err() != nil || d.last.Before(d.retryAt) {
		return
	}
	d.wid = d.hub.open(d, d.prefix, 0)
}

// waitUp blocks until the watch delivers, and returns the revision after
// which it misses no delete: a read at or after it, followed by register,
// leaves no gap.
func (d *dispatcher) waitUp(ctx context.Context, gone <-chan struct{}) (int64, error) {
	for {
		d.mu.Lock()
		if d.closed || d.ctx.Err() != nil {
			d.mu.Unlock()
			return 0, errDispatcherClosed
		}
		if d.cli.Ctx().Err() != nil {
			d.mu.Unlock()
			return 0, ErrClientClosed
		}
		d.kickLocked()
		if d.up {
			floor := d.floor
			d.mu.Unlock()
			return floor, nil
		}
		if d.changed == nil {
			d.changed = make(chan struct{})
		}
		changed := d.changed
		var t *time.Timer
		if d.wid == 0 { // refused lately: open it again after the pause
			t = time.NewTimer(time.Until(d.retryAt))
		}
		d.mu.Unlock()
		if t != nil {
			select {
			case <-t.C:
				continue
			case <-changed:
				t.Stop()
				continue
			case <-gone:
				t.Stop()
				return 0, lease.ErrExpired
			case <-ctx.Done():
				t.Stop()
				return 0, context.Cause(ctx)
			}
		}
		select {
		case <-changed:
		case <-gone:
			return 0, lease.ErrExpired
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

// register registers own (weight ignored) and blockers, as read at readRev:
// each was present at readRev. It returns nil when the watch may have
// missed a delete after readRev (it is down, or was opened or has
// forgotten deletes since); the caller then waits for it (waitUp), reads
// again, and registers with that read's revision.
func (d *dispatcher) register(readRev int64, own Entry, blockers []Entry) *sub {
	return d.registerCallback(readRev, own, blockers, nil)
}

// registerCallback is register, with cb, if not nil, called (outside the
// dispatcher's lock, on the hub's goroutine) instead of a signal on the
// sub's channel. It does not call cb for what is gone at registration: the
// caller checks the state once it has the sub. A sub without cb has its
// channel signalled for that already, so that its owner, which waits on
// the channel alone, learns of a delete the watch delivered between the
// owner's read and the registration (its own key revoked then waited out
// the lease's TTL, or for ever if only the key was deleted).
func (d *dispatcher) registerCallback(readRev int64, own Entry, blockers []Entry, cb func(*sub)) *sub {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.kickLocked()
	if !d.up || readRev < d.floor {
		return nil
	}
	s := &sub{d: d, cb: cb, ins: make([]*interest, 0, 1+len(blockers))}
	if cb == nil {
		s.c = make(chan struct{}, 1)
	}
	add := func(e Entry) {
		in := &interest{Entry: e, s: s}
		if r, ok := d.dels[e.Key]; ok && r > e.Rev {
			in.gone = true
			s.rev = max(s.rev, r)
		} else {
			d.linkLocked(in)
		}
		s.ins = append(s.ins, in)
	}
	add(own)
	for _, b := range blockers {
		add(b)
		if s.ins[len(s.ins)-1].gone {
			s.gone += b.Weight
		}
	}
	d.nsubs++
	if cb == nil && (s.ins[0].gone || s.gone > 0) {
		s.c <- struct{}{}
	}
	return s
}

// state is what a sub has learnt.
type state struct {
	broken  bool
	ownGone bool
	gone    int64 // summed weight of the blockers gone
	rev     int64 // mod revision of the latest delete routed to the sub
}

func (s *sub) state() state {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return state{broken: s.broken, ownGone: s.ins[0].gone, gone: s.gone, rev: s.rev}
}

// close removes the registration. It is idempotent, and a nil sub is fine.
func (s *sub) close() {
	if s == nil {
		return
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.ins == nil {
		return
	}
	if !s.broken {
		for _, in := range s.ins {
			if !in.gone {
				d.unlinkLocked(in)
			}
		}
		d.nsubs--
		d.last = time.Now()
	}
	s.ins = nil
}

// maxFew is how many interests a dispatcher keeps in a slice before it
// indexes them by key: most have one or two (a hold's key, a waiter's),
// for which a map costs several times as much.
const maxFew = 8

func (d *dispatcher) linkLocked(in *interest) {
	if d.keys == nil && len(d.few) < maxFew {
		d.few = append(d.few, in)
		return
	}
	if d.keys == nil {
		d.keys = make(map[string][]*interest, 2*maxFew)
		for _, x := range d.few {
			d.keys[x.Key] = append(d.keys[x.Key], x)
		}
		d.few = nil
	}
	d.keys[in.Key] = append(d.keys[in.Key], in)
}

func (d *dispatcher) unlinkLocked(in *interest) {
	if d.keys == nil {
		for i, x := range d.few {
			if x == in {
				last := len(d.few) - 1
				d.few[i], d.few[last] = d.few[last], nil
				d.few = d.few[:last]
				break
			}
		}
		if len(d.few) == 0 {
			d.few = nil
		}
		return
	}
	l := d.keys[in.Key]
	for i, x := range l {
		if x == in {
			l[i] = l[len(l)-1]
			l[len(l)-1] = nil
			l = l[:len(l)-1]
			break
		}
	}
	if len(l) == 0 {
		delete(d.keys, in.Key)
	} else {
		d.keys[in.Key] = l
	}
}

func (s *sub) signal() {
	if s.cb != nil {
		s.d.cbs = append(s.d.cbs, s)
		return
	}
	select {
	case s.c <- struct{}{}:
	default:
	}
}

func (d *dispatcher) upLocked(created int64) {
	d.up = true
	d.floor = created
	clear(d.dels)
	d.log = d.log[:0]
	d.head = 0
	d.wakeLocked()
}

// wakeLocked wakes whoever waits in waitUp.
func (d *dispatcher) wakeLocked() {
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
}

// downLocked voids every registration: their owners must read again once
// the watch is back.
func (d *dispatcher) downLocked() {
	void := func(in *interest) {
		s := in.s
		if !s.broken {
			s.broken = true
			d.nsubs--
			s.signal()
		}
	}
	for _, in := range d.few {
		void(in)
	}
	for _, l := range d.keys {
		for _, in := range l {
			void(in)
		}
	}
	d.few, d.keys = nil, nil
	// Wake whoever waits for the watch, also when it never came up: a
	// waiter in waitUp must see the client closed or the dispatcher gone.
	d.up = false
	d.wakeLocked()
}

// goneLocked marks in deleted at rev, unless the delete is of an earlier
// key of the same (reused) name, at or before in's creation; it reports
// whether it did.
func goneLocked(in *interest, rev int64) bool {
	if rev <= in.Rev {
		return false
	}
	in.gone = true
	s := in.s
	s.rev = max(s.rev, rev)
	if in != s.ins[0] {
		s.gone += in.Weight
	}
	s.signal()
	return true
}

// deletedLocked routes the delete of key at rev, and logs it.
func (d *dispatcher) deletedLocked(key string, rev int64) {
	if d.keys == nil {
		n := 0
		for _, in := range d.few {
			if in.Key != key || !goneLocked(in, rev) {
				d.few[n] = in
				n++
			}
		}
		clear(d.few[n:])
		d.few = d.few[:n]
	} else if l, ok := d.keys[key]; ok {
		n := 0
		for _, in := range l {
			if !goneLocked(in, rev) {
				l[n] = in
				n++
			}
		}
		clear(l[n:])
		if n == 0 {
			delete(d.keys, key)
		} else {
			d.keys[key] = l[:n]
		}
	}
	if len(d.log) < deleteLogCap {
		d.log = append(d.log, logged{key, rev})
	} else {
		old := d.log[d.head]
		if d.dels[old.key] == old.rev {
			delete(d.dels, old.key)
		}
		d.floor = max(d.floor, old.rev)
		d.log[d.head] = logged{key, rev}
		d.head = (d.head + 1) % deleteLogCap
	}
	if d.dels == nil {
		d.dels = make(map[string]int64)
	}
	d.dels[key] = rev
}

// close drops the watch and the dispatcher's hold on the client's hub,
// once the Primitive's holds have ended and its context is cancelled.
func (d *dispatcher) close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	id := d.wid
	d.wid = 0
	d.downLocked()
	cbs := d.takeCallbacksLocked()
	d.mu.Unlock()
	runCallbacks(cbs)
	if id != 0 {
		d.hub.drop(id)
	}
	if d.hub != nil {
		d.hub.release()
	}
}

// created marks the watch id up as of rev, unless it is so already (see
// startAtLocked).
func (d *dispatcher) created(id, rev int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if id == d.wid {
		d.fails = 0
		if !d.up {
			d.upLocked(rev)
		}
	}
}

// deleted routes the delete events of the watch id.
func (d *dispatcher) deleted(id int64, evs []*mvccpb.Event) {
	d.mu.Lock()
	if id != d.wid {
		d.mu.Unlock()
		return
	}
	for _, ev := range evs {
		if ev.Type == mvccpb.DELETE {
			d.deletedLocked(string(ev.Kv.Key), ev.Kv.ModRevision)
		}
	}
	cbs := d.takeCallbacksLocked()
	d.mu.Unlock()
	runCallbacks(cbs)
}

// failed takes down the watch id, which the server refused or cancelled
// (a compacted start revision): the registrations are void, and the next
// use opens a watch at the current revision.
func (d *dispatcher) failed(id int64) {
	d.mu.Lock()
	if id != d.wid {
		d.mu.Unlock()
		return
	}
	d.wid = 0
	d.fails++
	d.retryAt = time.Now().Add(min(20*time.Millisecond<<min(d.fails, 6), time.Second))
	d.downLocked()
	cbs := d.takeCallbacksLocked()
	d.mu.Unlock()
	runCallbacks(cbs)
}

// closeIfIdle drops the watch when nothing has been registered and no
// acquire begun for watchIdle, to spare etcd a watcher; the next use opens
// it again.
func (d *dispatcher) closeIfIdle() {
	d.mu.Lock()
	id := d.wid
	if id == 0 || d.nsubs > 0 || time.Since(d.last) < watchIdle {
		d.mu.Unlock()
		return
	}
	d.wid = 0
	d.downLocked()
	d.mu.Unlock()
	d.hub.drop(id)
}

func (d *dispatcher) takeCallbacksLocked() []*sub {
	cbs := d.cbs
	d.cbs = nil
	return cbs
}

// runCallbacks runs the callbacks of the subs signalled, outside the
// dispatcher's lock.
func runCallbacks(subs []*sub) {
	for _, s := range subs {
		s.cb(s)
	}
}
