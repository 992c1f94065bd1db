package lock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/config"
	"github.com/etcdlock/etcdlock/internal/ctxerr"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// The kinds of queue as they appear in keys: "<namespace><kind>/<name>/".
const (
	mutexKind = "mutex"
	rwKind    = "rw"
	semKind   = "sem"
)

// Kind names the kind of lock a Queue belongs to.
type Kind string

// The kinds of lock, in the order Inspect returns their queues.
const (
	KindMutex     Kind = "mutex"     // a Mutex
	KindRWMutex   Kind = "rwmutex"   // an RWMutex
	KindSemaphore Kind = "semaphore" // a Semaphore
)

// The modes of an RWMutex's entries.
const (
	ModeRead  = "read"
	ModeWrite = "write"
)

// ErrForeignKey is matched by the Entry.Err of a key under an RWMutex's
// prefix that is neither a reader's nor a writer's: no RWMutex wrote it,
// yet writers queued after it wait for it to go.
var ErrForeignKey = errors.New("etcdlock: not a key of the lock")

// Status is what Inspect read: the queues of one name, at one revision.
type Status struct {
	// Name is the lock's name, as passed to Inspect.
	Name string
	// Namespace is the key prefix the lock's keys live under (WithNamespace).
	Namespace string
	// Revision is the etcd revision the queues were read at.
	Revision int64
	// Queues holds one queue of each kind, in the order KindMutex,
	// KindRWMutex, KindSemaphore, each present even when it has no keys.
	Queues []Queue
}

// Queue returns the queue of the given kind, or nil for an unknown kind.
func (s *Status) Queue(kind Kind) *Queue {
	for i := range s.Queues {
		if s.Queues[i].Kind == kind {
			return &s.Queues[i]
		}
	}
	return nil
}

// Queue is the queue of one lock: its holders and waiters.
type Queue struct {
	// Kind says which primitive's keys these are.
	Kind Kind
	// Prefix is the etcd key prefix of the lock's keys (its Prefix()).
	Prefix string
	// Limit is the semaphore's limit, as stored with its oldest entry that
	// is a semaphore entry; 0 if there is none, and for other kinds.
	Limit int64
	// Entries are every key under Prefix, in queue order: by create
	// revision, which is their token.
	Entries []Entry
}

// Entry is one key of a queue: a holder, a waiter, or a key the lock's
// rules reject.
type Entry struct {
	// Key is the etcd key.
	Key string
	// Token is the fencing token the key's hold has or will have.
	Token fencing.Token
	// Lease is the key's lease, 0 for none. Inspect does not read leases;
	// ask cli.TimeToLive for what is left of one.
	Lease clientv3.LeaseID
	// Holding says whether the lock's rules, which the entry's own acquire
	// applies, admit the entry: it holds (or, a waiter just admitted, will
	// hold as soon as it learns so). An entry with Err never holds.
	Holding bool
	// Mode is ModeRead or ModeWrite for an RWMutex entry, "" otherwise.
	Mode string
	// Permits is the number of permits a Semaphore entry holds or waits
	// for; 0 for other kinds.
	Permits int64
	// Holder is the holder description (WithHolder) stored in the key: its
	// value, or the holder part of a semaphore entry's value. If the key is
	// not a semaphore entry, it is the whole value.
	Holder string
	// Err is non-nil if the lock's rules reject the entry, which then
	// neither holds nor waits. Under an RWMutex: a key that is neither a
	// reader's nor a writer's (ErrForeignKey), which no RWMutex wrote.
	// Under a Semaphore: a key that is not a semaphore entry, or one behind
	// such a key or behind an entry of another limit, whose acquire fails
	// with this error (matching ErrLimitMismatch).
	Err error
}

// Waiting reports whether e waits: neither holds nor is rejected.
func (e Entry) Waiting() bool { return !e.Holding && e.Err == nil }

// Inspect reads the queues of the Mutex, RWMutex and Semaphore called name
// and says who holds and who waits, by the rules their Lock, RLock and
// Acquire apply. It reads in one linearizable transaction (one range per
// queue, values included), so it blocks for one round trip to etcd, or
// until ctx ends. It reads no leases and writes nothing.
//
// The result is a snapshot at Status.Revision: it may be stale the moment
// Inspect returns, as holders unlock and waiters come and go. Use it to show
// or monitor a lock, never in place of holding it or of checking a hold's
// fencing token.
//
// Of the options only WithNamespace matters; the others are validated and
// ignored. Inspect returns ErrNilClient, ErrInvalidName, ErrInvalidNamespace
// or ErrInvalidOption for bad arguments, without I/O; ctx's error
// (context.Cause) if it ends first, without I/O if it had ended before the
// call; ErrClientClosed once the etcd client is closed; or etcd's error. It
// is safe for concurrent use.
func Inspect(ctx context.Context, cli *clientv3.Client, name string, options ...Option) (*Status, error) {
	cfg, err := config.Build(cli, name, opts(options))
	if err != nil {
		return nil, err
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err // ended already: no read
	}
	kinds := []struct {
		kind Kind
		key  string
	}{{KindMutex, mutexKind}, {KindRWMutex, rwKind}, {KindSemaphore, semKind}}
	st := &Status{Name: name, Namespace: cfg.Namespace, Queues: make([]Queue, len(kinds))}
	ops := make([]clientv3.Op, len(kinds))
	for i, k := range kinds {
		st.Queues[i] = Queue{Kind: k.kind, Prefix: keys.Prefix(cfg.Namespace, k.key, name)}
		ops[i] = clientv3.OpGet(st.Queues[i].Prefix, clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	}
	resp, err := cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		if cause := ctxerr.Ended(ctx); cause != nil {
			return nil, cause
		}
		if cli.Ctx().Err() != nil {
			return nil, ErrClientClosed // not the context.Canceled clientv3 reports
		}
		return nil, fmt.Errorf("etcdlock: reading the queues of %q: %w", name, err)
	}
	st.Revision = resp.Header.Revision
	for i := range st.Queues {
		st.Queues[i].judge(name, resp.Responses[i].GetResponseRange().Kvs)
	}
	return st, nil
}

// judge fills q.Entries from kvs, the keys under q.Prefix, each judged by
// the rule its acquire applies.
func (q *Queue) judge(name string, kvs []*mvccpb.KeyValue) {
	q.Entries = make([]Entry, 0, len(kvs))
	for _, kv := range kvs {
		e := Entry{
			Key:    string(kv.Key),
			Token:  fencing.Token{Key: string(kv.Key), Revision: kv.CreateRevision},
			Lease:  clientv3.LeaseID(kv.Lease),
			Holder: string(kv.Value),
		}
		self := queue.Entry{Key: e.Key, Rev: kv.CreateRevision, Weight: 1}
		var (
			rule   queue.Rule
			prefix string // of the queue the acquire used
		)
		switch q.Kind {
		case KindMutex:
			rule, prefix = queue.Exclusive{}, q.Prefix
		case KindRWMutex:
			rp, rr := rwReader(q.Prefix)
			wp, wr := rwWriter(q.Prefix)
			switch {
			case strings.HasPrefix(e.Key, rp):
				e.Mode, rule, prefix = ModeRead, rr, rp
			case strings.HasPrefix(e.Key, wp):
				e.Mode, rule, prefix = ModeWrite, wr, wp
			default:
				e.Err = fmt.Errorf("%w: %s is neither a reader's nor a writer's key of reader-writer lock %q", ErrForeignKey, e.Key, name)
			}
		case KindSemaphore:
			k, limit, holder, ok := ParseSemaphoreValue(kv.Value)
			if !ok {
				e.Err = notSemEntry(name, kv)
				break
			}
			if q.Limit == 0 {
				q.Limit = limit
			}
			e.Permits, e.Holder = k, holder
			self.Weight = k
			rule, prefix = semRule{limit: limit, name: name}, q.Prefix
		}
		if rule != nil {
			v := judge(rule, prefix, q.Prefix, self, kvs)
			e.Holding, e.Err = v.Admitted && v.Err == nil, v.Err
		}
		q.Entries = append(q.Entries, e)
	}
}

// judge returns rule's verdict for self, a key of the queue at prefix, given
// snapshot, every key under base read at one revision: Judge is given what
// the rule's own confirm Reads would have read at that revision. A rule
// whose Reads leave base, or are not ranges, is a bug.
//
// Judge is told of all the older keys a read would return, even where the
// read has a limit: none of the rules' admissions depends on a limit, which
// only spares the enqueue Txn reading keys it need not know of.
func judge(rule queue.Rule, prefix, base string, self queue.Entry, snapshot []*mvccpb.KeyValue) queue.Verdict {
	reads := rule.Reads(prefix, self.Rev)
	resps := make([]*pb.RangeResponse, len(reads))
	baseEnd := []byte(clientv3.GetPrefixRangeEnd(base))
	for i, op := range reads {
		from, end := op.KeyBytes(), op.RangeBytes()
		if !op.IsGet() || bytes.Compare(from, []byte(base)) < 0 || len(end) == 0 ||
			bytes.Equal(end, []byte{0}) || bytes.Compare(end, baseEnd) > 0 {
			panic(fmt.Sprintf("lock: rule %T reads outside its lock's keys %s", rule, base))
		}
		r := &pb.RangeResponse{}
		for _, kv := range snapshot {
			if bytes.Compare(kv.Key, from) >= 0 && bytes.Compare(kv.Key, end) < 0 &&
				(op.MaxCreateRev() == 0 || kv.CreateRevision <= op.MaxCreateRev()) {
				r.Kvs = append(r.Kvs, kv)
			}
		}
		r.Count = int64(len(r.Kvs))
		resps[i] = r
	}
	return rule.Judge(self, resps)
}
