package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/ctxerr"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// Kind is the kind of a lock, spelled as in its keys:
// "<namespace><kind>/<name>/".
type Kind string

// The kinds of lock, in the order Inspect returns them.
const (
	KindMutex     Kind = "mutex" // a Mutex
	KindRWMutex   Kind = "rw"    // an RWMutex
	KindSemaphore Kind = "sem"   // a Semaphore
)

// Mode is the mode of an RWMutex's key.
type Mode string

// The modes of an RWMutex's keys.
const (
	ModeRead  Mode = "read"
	ModeWrite Mode = "write"
)

// ErrStrayKey is matched by the KeyState.Err of a key under an RWMutex's
// prefix that is neither a reader's nor a writer's: no RWMutex wrote it,
// yet writers queued after it wait for it to go.
var ErrStrayKey = errors.New("lock: stray key, written by no lock")

// KeyPrefix returns the etcd key prefix of the lock of kind called name
// under namespace: what its Prefix method returns. name must be valid (see
// ErrInvalidName); it is escaped so that no lock's prefix holds another's.
func KeyPrefix(namespace string, kind Kind, name string) string {
	return keys.Prefix(namespace, string(kind), name)
}

// Snapshot is what Inspect read: the locks of one name, at one revision.
type Snapshot struct {
	Name      string // the name passed to Inspect
	Namespace string // the namespace passed to Inspect
	Revision  int64  // the etcd revision the keys were read at
	// Locks holds one lock of each kind, in the order KindMutex,
	// KindRWMutex, KindSemaphore, each present even when it has no keys.
	Locks []LockState
}

// Lock returns the lock of the given kind, or nil for an unknown kind.
func (s *Snapshot) Lock(kind Kind) *LockState {
	for i := range s.Locks {
		if s.Locks[i].Kind == kind {
			return &s.Locks[i]
		}
	}
	return nil
}

// LockState is one lock in a Snapshot: its holders and waiters.
type LockState struct {
	Kind   Kind
	Prefix string // the etcd key prefix of the lock's keys (KeyPrefix)
	// Limit is the semaphore's limit, as stored with its oldest key that is
	// a semaphore entry; 0 if there is none, and for other kinds.
	Limit int64
	// Keys are every key under Prefix, in queue order: by create revision,
	// which is their token.
	Keys []KeyState
}

// KeyState is one key of a lock: a holder, a waiter, or a key the lock's
// rules reject.
type KeyState struct {
	Key   string
	Token fencing.Token // the fencing token the key's hold has or will have
	// Lease is the key's lease, 0 for none. Inspect reads no leases: ask
	// cli.TimeToLive for what is left of one.
	Lease clientv3.LeaseID
	// Holding says whether the lock's rules, which the key's own acquire
	// applies, admit the key: it holds (or, a waiter just admitted, will
	// hold as soon as it learns so). A key with Err never holds.
	Holding bool
	Mode    Mode  // ModeRead or ModeWrite for an RWMutex's key, else ""
	Permits int64 // the permits a Semaphore's key holds or waits for, else 0
	// Holder is the holder description (WithHolder) stored in the key; all
	// of its value if the key is not a semaphore entry.
	Holder string
	// Err is non-nil if the lock's rules reject the key, which then neither
	// holds nor waits: under an RWMutex, a key no RWMutex wrote
	// (ErrStrayKey); under a Semaphore, a key that is not a semaphore
	// entry, or one behind such a key or an entry of another limit, whose
	// acquire fails with this error (matching ErrLimitMismatch).
	Err error
}

// Waiting reports whether k waits: neither holds nor is rejected.
func (k KeyState) Waiting() bool { return !k.Holding && k.Err == nil }

// Inspect reads, in one linearizable Txn, the Mutex, RWMutex and Semaphore
// called name under namespace (DefaultNamespace unless they use
// WithNamespace) and says who holds and who waits, by their own rules. The
// Snapshot is for display and monitoring, never in place of a hold or of
// fencing. Bad arguments return ErrNilClient, ErrInvalidName or
// ErrInvalidNamespace without I/O.
func Inspect(ctx context.Context, cli *clientv3.Client, namespace, name string) (*Snapshot, error) {
	if cli == nil {
		return nil, ErrNilClient
	}
	if err := errors.Join(keys.ValidateName(name), keys.ValidateNamespace(namespace)); err != nil {
		return nil, public.Err(err)
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err // ended already: no read
	}
	if cli.Ctx().Err() != nil {
		// clientv3 retries a read-only Txn on a closing connection until
		// ctx ends; say at once what the caller can act on.
		return nil, ErrClientClosed
	}
	kinds := []Kind{KindMutex, KindRWMutex, KindSemaphore}
	st := &Snapshot{Name: name, Namespace: namespace, Locks: make([]LockState, len(kinds))}
	ops := make([]clientv3.Op, len(kinds))
	for i, k := range kinds {
		st.Locks[i] = LockState{Kind: k, Prefix: KeyPrefix(namespace, k, name)}
		ops[i] = clientv3.OpGet(st.Locks[i].Prefix, clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	}
	resp, err := cli.Txn(ctx).Then(ops...).Commit()
	if err == nil {
		err = queue.CheckTxn(resp, len(ops), 0)
	}
	if err != nil {
		if cause := ctxerr.Ended(ctx); cause != nil {
			return nil, cause
		}
		if cli.Ctx().Err() != nil {
			return nil, ErrClientClosed // not the context.Canceled clientv3 reports
		}
		return nil, fmt.Errorf("lock: reading the keys of %q: %w", name, err)
	}
	st.Revision = resp.Header.Revision
	for i := range st.Locks {
		st.Locks[i].judge(name, resp.Responses[i].GetResponseRange().Kvs)
	}
	return st, nil
}

// judge fills l.Keys from kvs, the keys under l.Prefix, each judged by
// the rule its acquire applies.
func (l *LockState) judge(name string, kvs []*mvccpb.KeyValue) {
	l.Keys = make([]KeyState, 0, len(kvs))
	for _, kv := range kvs {
		e := KeyState{
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
		switch l.Kind {
		case KindMutex:
			rule, prefix = queue.Exclusive{}, l.Prefix
		case KindRWMutex:
			rp, rr := rwReader(l.Prefix)
			wp, wr := rwWriter(l.Prefix)
			switch {
			case strings.HasPrefix(e.Key, rp):
				e.Mode, rule, prefix = ModeRead, rr, rp
			case strings.HasPrefix(e.Key, wp):
				e.Mode, rule, prefix = ModeWrite, wr, wp
			default:
				e.Err = fmt.Errorf("%w: %s is neither a reader's nor a writer's key of reader-writer lock %q", ErrStrayKey, e.Key, name)
			}
		case KindSemaphore:
			k, limit, holder, ok := parseSemValue(kv.Value)
			if !ok {
				e.Err = notSemEntry(name, kv)
				break
			}
			if l.Limit == 0 {
				l.Limit = limit
			}
			e.Permits, e.Holder = k, holder
			self.Weight = k
			rule, prefix = semRule{limit: limit, name: name}, l.Prefix
		}
		if rule != nil {
			v := queue.JudgeSnapshot(rule, prefix, l.Prefix, self, kvs)
			e.Holding, e.Err = v.Admitted && v.Err == nil, v.Err
		}
		l.Keys = append(l.Keys, e)
	}
}
