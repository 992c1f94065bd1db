package lock

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/etcdcmp"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// RWMutex is a fair distributed reader-writer lock: any number of readers,
// or one writer. Readers and writers wait in one queue, in the order they
// asked (their keys' create revisions), and the queue is writer-fair:
//
//   - a reader waits only for the writers queued before it, so readers
//     already holding do not keep a queued writer out, and the readers
//     queued behind one writer all hold together once it unlocks;
//   - a writer waits for everyone queued before it, readers and writers.
//
// So writers never starve, and neither do readers.
//
// Every hold, read or write, is a *Hold: a fencing token, Done and Context
// that end at the first sign the hold may be lost (as for Mutex), and a
// guarded, retryable Unlock. A waiter is granted only once it has seen,
// from a watch that misses no delete after its enqueue, every key it must
// wait for deleted while its own key was not (or, after the watch broke,
// by a fresh read), so a waiter whose session ends while it waits returns
// ErrSessionExpired and is never granted on a key it no longer has: the
// double writer of etcd's recipes.RWMutex (etcd #16221) cannot happen. (A
// lease that ends just after the grant ends the hold like any other loss.)
//
// # Fencing read and write tokens
//
// A hold's token is its key's create revision. A write hold's token is
// greater than the token of every hold, read or write, granted before it; a
// read hold's token is greater than that of every write hold granted before
// it. Tokens of read holds are not ordered among themselves: readers queued
// together are granted together. A resource guarded by an RWMutex keeps two
// numbers, the highest token it has seen from anyone and the highest token
// it has seen from a writer, and
//
//   - accepts a write iff its token is at least the highest token seen of
//     either kind (so a stale writer is refused after any newer hold acted);
//   - accepts a read iff its token is at least the highest writer token
//     seen (so a stale reader is refused after a newer writer acted).
//
// fencing.RWFence implements exactly this for a resource in the same
// process as the check. Inside etcd, fence with fencing.Commit, which holds only while the
// hold's key is current, for reads as well as writes.
//
// The lock is not reentrant: a hold of either kind followed by Lock on the
// same name waits for itself until ctx ends, as does a read hold followed by
// RLock while a writer is queued between them. There is no upgrade or
// downgrade.
//
// An RWMutex is safe for concurrent use: each call is its own waiter, and
// holds through one RWMutex (or one session) are separate holders, sharing
// or excluding each other by the rules above. Close it when done.
//
// # Round trips
//
// RLock, Lock and Unlock uncontended: one Txn each (plus a lease grant the
// first time). After an RLock granted at once (no writer queued, even
// while readers hold), the next RLock first sends a smaller Txn that only
// takes the lock if it is granted at once, and one more Txn when it is not;
// Lock likewise after a Lock granted at once. TryRLock and TryLock: one
// Txn, granted or not, and they leave that hint alone. A waiter watches
// only the key that decides its turn: a reader the nearest writer queued
// before it, a writer the nearest key of either kind. When that key goes
// it reads once (one read-only Txn), and is granted or watches the next
// one. So an unlock reaches only the waiters it may admit: a reader's,
// the writer just behind it, if any; a writer's, the readers queued
// behind it (who all hold together) or the next writer. A writer behind n
// readers that unlock in any order wakes about ln n times. Each RWMutex
// also keeps one watch on its own keys while in use (see Mutex), which
// gives holds their early loss signal.
type RWMutex struct {
	p      *queue.Primitive
	name   string
	prefix string
	reader queue.Queue // keys under prefix+"r/"
	writer queue.Queue // keys under prefix+"w/"
}

// NewRWMutex returns the reader-writer lock called name on cli, its
// readers' keys under Prefix()+"r/", its writers' under Prefix()+"w/". It
// does no I/O.
func NewRWMutex(cli *clientv3.Client, name string, options ...Option) (*RWMutex, error) {
	p, err := queue.NewPrimitive(cli, string(KindRWMutex), name, nil, queue.SharedWatch, opts(options), public)
	if err != nil {
		return nil, err
	}
	if err := mutexOnly(p); err != nil {
		return nil, err
	}
	base := p.Q.Prefix
	m := &RWMutex{p: p, name: name, prefix: base, reader: p.Q, writer: p.Q}
	m.reader.Prefix, m.reader.Rule = rwReader(base)
	m.writer.Prefix, m.writer.Rule = rwWriter(base)
	m.reader.OwnHint() // a reader let in beside readers says nothing of writers' chances
	m.writer.OwnHint()
	return m, nil
}

// RLock blocks until a read hold is granted, when no writer queued before
// it still holds or waits; its errors are an acquire's (see the package
// doc). Uncontended it costs one round trip.
func (m *RWMutex) RLock(ctx context.Context) (*Hold, error) {
	return m.acquire(ctx, &m.reader, queue.Wait)
}

// Lock blocks until a write hold is granted, when every reader and writer
// queued before it has unlocked, given up or lost its hold. Its cost and
// errors are RLock's.
func (m *RWMutex) Lock(ctx context.Context) (*Hold, error) {
	return m.acquire(ctx, &m.writer, queue.Wait)
}

// TryRLock takes a read hold if no writer holds or waits, in one round
// trip, and returns ErrLocked at once otherwise.
func (m *RWMutex) TryRLock(ctx context.Context) (*Hold, error) {
	return m.acquire(ctx, &m.reader, queue.Try)
}

// TryLock takes a write hold if nobody holds or waits, in one round trip,
// and returns ErrLocked at once otherwise.
func (m *RWMutex) TryLock(ctx context.Context) (*Hold, error) {
	return m.acquire(ctx, &m.writer, queue.Try)
}

func (m *RWMutex) acquire(ctx context.Context, q *queue.Queue, mode queue.Mode) (*Hold, error) {
	h, err := m.p.Acquire(ctx, q, queue.Request{Mode: mode})
	if err != nil {
		return nil, err
	}
	return newHold(m.p, h), nil
}

// RDo is Mutex.Do with a read hold.
func (m *RWMutex) RDo(ctx context.Context, fn func(ctx context.Context, token fencing.Token) error) error {
	h, err := m.RLock(ctx)
	if err != nil {
		return err
	}
	return h.run(ctx, fn)
}

// Do is Mutex.Do with a write hold.
func (m *RWMutex) Do(ctx context.Context, fn func(ctx context.Context, token fencing.Token) error) error {
	h, err := m.Lock(ctx)
	if err != nil {
		return err
	}
	return h.run(ctx, fn)
}

// Name returns the lock's name.
func (m *RWMutex) Name() string { return m.name }

// Prefix returns the etcd key prefix of the lock's queue, which holds every
// reader and writer key.
func (m *RWMutex) Prefix() string { return m.prefix }

// Close ends the RWMutex's waits, unlocks its holds and revokes its own
// lease, each bounded in time (see the package doc).
func (m *RWMutex) Close() error { return m.p.Close() }

// rwReader returns the key prefix and the rule of the readers of the lock
// whose keys are under base; rwWriter, of its writers.
func rwReader(base string) (string, queue.Rule) { return base + "r/", readerRule{base: base} }

func rwWriter(base string) (string, queue.Rule) { return base + "w/", writerRule{base: base} }

// readerRule admits a reader when no writer is older; a waiting reader
// watches the nearest older writer (all readers behind one writer wake on
// its delete, and no reader's release reaches them).
type readerRule struct{ base string }

func (r readerRule) Reads(_ string, maxRev int64) []clientv3.Op {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
	if maxRev != 0 { // else: in the enqueue Txn every writer key is older than ours
		opts = append(opts, clientv3.WithMaxCreateRev(maxRev-1), clientv3.WithSerializable())
	}
	return []clientv3.Op{clientv3.OpGet(r.base+"w/", opts...)}
}

func (readerRule) Judge(self queue.Entry, resps []*pb.RangeResponse) queue.Verdict {
	return nearestOlder(self, resps[0].Kvs)
}

// nearestOlder admits self when no key of kvs is older, and otherwise has
// it wait for the newest of the older keys.
func nearestOlder(self queue.Entry, kvs []*mvccpb.KeyValue) queue.Verdict {
	var near queue.Entry
	for _, e := range queue.Older(self, kvs, nil) {
		if e.Rev > near.Rev {
			near = e
		}
	}
	if near.Rev == 0 {
		return queue.Verdict{Admitted: true}
	}
	return queue.Verdict{Blockers: []queue.Entry{near}}
}

func (r readerRule) TryIf(string) []clientv3.Cmp {
	return []clientv3.Cmp{etcdcmp.CreateRevision(r.base+"w/", 0, true)}
}

// writerRule admits a writer when no key of the lock, reader's or writer's,
// is older; a waiting writer watches the nearest older key, and reads
// again when it goes (readers ahead release in any order: a writer behind
// n of them wakes about ln n times, not n).
type writerRule struct{ base string }

func (r writerRule) Reads(_ string, maxRev int64) []clientv3.Op {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
	if maxRev != 0 { // else: in the enqueue Txn every other key is older than ours
		opts = append(opts, clientv3.WithMaxCreateRev(maxRev-1), clientv3.WithSerializable())
	}
	return []clientv3.Op{clientv3.OpGet(r.base, opts...)}
}

func (writerRule) Judge(self queue.Entry, resps []*pb.RangeResponse) queue.Verdict {
	return nearestOlder(self, resps[0].Kvs)
}

func (r writerRule) TryIf(string) []clientv3.Cmp { return queue.Exclusive{}.TryIf(r.base) }
