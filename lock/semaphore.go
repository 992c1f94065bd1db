package lock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// MaxSemaphoreLimit is the largest number of permits a Semaphore may have.
// It keeps every sum of permits far from overflow: an int64 sum would need
// more than two billion keys in one queue to overflow.
const MaxSemaphoreLimit int64 = 1 << 32

var (
	// ErrInvalidPermits is returned by Acquire and TryAcquire for a number
	// of permits below 1 or above the semaphore's limit, without any I/O.
	ErrInvalidPermits = errors.New("lock: invalid number of permits")
	// ErrLimitMismatch is matched by the error of an Acquire or TryAcquire
	// that found a holder or waiter ahead of it that opened the semaphore
	// with a different limit (a *LimitMismatchError), or a key under the
	// semaphore's prefix that is not a semaphore entry at all.
	ErrLimitMismatch = errors.New("lock: semaphore limit mismatch")
)

// LimitMismatchError reports that a holder or waiter of the semaphore opened
// it with a different limit. It matches ErrLimitMismatch.
type LimitMismatchError struct {
	Name   string // the semaphore's name
	Limit  int64  // the limit of the Semaphore that was asked to acquire
	Stored int64  // the limit stored with Key
	Key    string // the key of the holder or waiter ahead
}

// Error names the semaphore, both limits and the key that stores the other.
func (e *LimitMismatchError) Error() string {
	return fmt.Sprintf("lock: semaphore %q opened with limit %d, but %s holds or waits with limit %d",
		e.Name, e.Limit, e.Key, e.Stored)
}

// Is reports whether target is ErrLimitMismatch.
func (e *LimitMismatchError) Is(target error) bool { return target == ErrLimitMismatch }

// Semaphore is a fair distributed counting semaphore: Limit permits, of
// which a holder takes one or more at once. Waiters are served strictly in
// the order they asked (their keys' create revisions), without barging: a
// request at the head that does not fit yet is not overtaken by later
// requests that would, so a large request never starves.
//
// The limit is stored with the semaphore, in every holder's and waiter's
// key (no key outlives its holders). An Acquire that finds a holder or
// waiter ahead of it with a different limit fails with a *LimitMismatchError
// instead of counting with a different limit; when the semaphore has no
// holders or waiters, the first to come sets the limit.
//
// Every grant is a *Hold for its permits: a fencing token, Done and Context
// that end at the first sign the hold may be lost (as for Mutex), and
// Unlock, a guarded, retryable release of all its permits. Tokens of holds
// that overlap in time are not ordered by grant time, so a resource cannot
// fence semaphore holds with a high-water mark (fencing.Fence): check that a
// hold is still current with fencing.Commit instead.
//
// A Semaphore is safe for concurrent use: each call is its own waiter. Close
// it when done.
//
// # Round trips
//
// Acquire uncontended: one Txn, which writes the key and reads the keys
// ahead (plus a lease grant the first time). Unlock: one Txn. TryAcquire: one
// Txn when granted, two (enqueue and remove) when refused. A waiter that
// does not fit watches only its window: the nearest keys ahead of it whose
// permits, with its own, exceed the limit (for limit 4 and one permit
// each, the 4 keys just ahead; one key for a request of every permit).
// While they are all present it cannot fit, whatever else is released;
// when one goes it reads once (one read-only Txn) and is granted or
// watches its new window. A release thus reaches the waiters whose windows
// hold it, at most the limit's worth of permits behind it, not every
// client. A window of more than 8 keys (a limit above 8 with small
// requests) is watched as the whole prefix instead. The enqueue and
// those reads read keys only (each key's name carries its permits and the
// limit) and at most the limit's worth of the nearest keys ahead: etcd
// serves them from its in-memory index and sends at most that many keys,
// though it still sorts the whole queue to find them. Each Semaphore also keeps one watch on its own keys while in
// use (see Mutex), which gives holds their early loss signal.
type Semaphore struct {
	p     *queue.Primitive
	name  string
	limit int64
}

// NewSemaphore returns the semaphore called name on cli, with limit permits
// (1 <= limit <= MaxSemaphoreLimit, else ErrInvalidOption). It does no I/O:
// Acquire reports a different limit stored with the semaphore.
func NewSemaphore(cli *clientv3.Client, name string, limit int64, options ...Option) (*Semaphore, error) {
	if limit < 1 || limit > MaxSemaphoreLimit {
		return nil, fmt.Errorf("%w: semaphore limit %d is not in [1, %d]", ErrInvalidOption, limit, MaxSemaphoreLimit)
	}
	p, err := queue.NewPrimitive(cli, string(KindSemaphore), name, semRule{limit: limit, name: name}, queue.SharedWatch, opts(options), public)
	if err != nil {
		return nil, err
	}
	if err := mutexOnly(p); err != nil {
		return nil, err
	}
	return &Semaphore{p: p, name: name, limit: limit}, nil
}

// Acquire blocks until k permits are granted, when the permits of every
// holder and waiter ahead plus k fit in the limit, and returns the hold of
// all k. Besides an acquire's errors (see the package doc) it returns
// ErrInvalidPermits unless 1 <= k <= Limit(), without I/O, and one matching
// ErrLimitMismatch when a key ahead has another limit.
func (s *Semaphore) Acquire(ctx context.Context, k int64) (*Hold, error) {
	return s.acquire(ctx, k, queue.Wait)
}

// TryAcquire takes k permits if they fit beside the holders now and no
// waiter is ahead, and returns ErrLocked at once otherwise. It costs one
// round trip when granted, two when refused (enqueue, then removal).
func (s *Semaphore) TryAcquire(ctx context.Context, k int64) (*Hold, error) {
	return s.acquire(ctx, k, queue.Try)
}

func (s *Semaphore) acquire(ctx context.Context, k int64, mode queue.Mode) (*Hold, error) {
	if k < 1 || k > s.limit {
		return nil, fmt.Errorf("%w: %d permits of semaphore %q with limit %d", ErrInvalidPermits, k, s.name, s.limit)
	}
	h, err := s.p.Acquire(ctx, &s.p.Q, queue.Request{Value: semValue(k, s.limit, s.p.Value), Weight: k, Mode: mode, KeySuffix: semSuffix(k, s.limit)})
	if err != nil {
		return nil, err
	}
	return newHold(s.p, h), nil
}

// Do is Mutex.Do with k permits.
func (s *Semaphore) Do(ctx context.Context, k int64, fn func(ctx context.Context, token fencing.Token) error) error {
	h, err := s.Acquire(ctx, k)
	if err != nil {
		return err
	}
	return h.run(ctx, fn)
}

// Limit returns the number of permits this Semaphore was opened with.
func (s *Semaphore) Limit() int64 { return s.limit }

// Name returns the semaphore's name.
func (s *Semaphore) Name() string { return s.name }

// Prefix returns the etcd key prefix of the semaphore's queue.
func (s *Semaphore) Prefix() string { return s.p.Q.Prefix }

// Close ends the Semaphore's waits, unlocks its holds and revokes its own
// lease, each bounded in time (see the package doc).
func (s *Semaphore) Close() error { return s.p.Close() }

// The value of a semaphore key is "v1 <permits> <limit> <holder>".
const semFormat = "v1"

func semValue(k, limit int64, holder string) string {
	return semFormat + " " + strconv.FormatInt(k, 10) + " " + strconv.FormatInt(limit, 10) + " " + holder
}

// parseSemValue parses the value of a semaphore's key (semValue) into the
// permits the key holds or waits for, the limit of the Semaphore that wrote
// it, and its holder description. It returns ok false if v is not such a
// value: another format, or numbers out of range (1 <= permits <= limit <=
// MaxSemaphoreLimit).
func parseSemValue(v []byte) (permits, limit int64, holder string, ok bool) {
	f := strings.SplitN(string(v), " ", 4)
	if len(f) != 4 || f[0] != semFormat {
		return 0, 0, "", false
	}
	k, err1 := strconv.ParseInt(f[1], 10, 64)
	limit, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || limit < 1 || limit > MaxSemaphoreLimit || k < 1 || k > limit {
		return 0, 0, "", false
	}
	return k, limit, f[3], true
}

// semSuffix ends the key of a request for k permits of a semaphore with
// limit permits: "_<k>_<limit>". The waiter names (internal/keys) hold no
// '_'. The value (semValue) says the same, for status readers and for
// earlier versions of this package, which read values.
func semSuffix(k, limit int64) string {
	return "_" + strconv.FormatInt(k, 10) + "_" + strconv.FormatInt(limit, 10)
}

// parseSemKey parses the permits and the limit that end a semaphore key
// (semSuffix); ok false if key does not end so or the numbers are out of
// range, as for parseSemValue.
func parseSemKey(key []byte) (permits, limit int64, ok bool) {
	s := string(key)
	j := strings.LastIndexByte(s, '_')
	if j < 0 {
		return 0, 0, false
	}
	i := strings.LastIndexByte(s[:j], '_')
	if i < 0 {
		return 0, 0, false
	}
	k, err1 := strconv.ParseInt(s[i+1:j], 10, 64)
	limit, err2 := strconv.ParseInt(s[j+1:], 10, 64)
	if err1 != nil || err2 != nil || limit < 1 || limit > MaxSemaphoreLimit || k < 1 || k > limit {
		return 0, 0, false
	}
	return k, limit, true
}

// notSemKey is the error of meeting key, whose name does not end as a
// semaphore entry's (semSuffix), in the queue of the semaphore called
// name: a foreign key, or one of an earlier version of this package.
func notSemKey(name string, key []byte) error {
	return fmt.Errorf("%w: key %s of semaphore %q is not a semaphore entry (its name does not end with its permits and limit)", ErrLimitMismatch, key, name)
}

// notSemEntry is the error of meeting kv, which is not a semaphore entry,
// in the queue of the semaphore called name.
func notSemEntry(name string, kv *mvccpb.KeyValue) error {
	v := kv.Value[:min(len(kv.Value), 64)]
	return fmt.Errorf("%w: key %s of semaphore %q holds %q, not a semaphore entry", ErrLimitMismatch, kv.Key, name, v)
}

// semRule admits a request for k permits (the waiter's weight) when the
// permits of every older key, holding or waiting, plus k fit in the limit.
// Counting older waiters as if they held is what stops barging. A waiter
// that does not fit watches its window: the nearest older keys whose
// permits alone exceed limit-k. While they are all present it cannot fit,
// whatever else goes; when one goes it reads again. Its window holds at
// most limit-k+1 keys (one when it wants every permit), and a release
// reaches only the waiters whose windows hold the released key: those
// within the limit's worth of permits behind it.
//
// Each key's name ends with its permits and limit (semSuffix), so the
// reads are keys only: etcd answers them from its in-memory index, without
// reading a value from its backend. They ask for the nearest limit older
// keys only: each weighs at least one permit, so when there are more
// (the answer's More) the request cannot fit, and its window is among
// them. etcd sorts the whole queue before it cuts the answer (it drops a
// limit that is not by key, etcdserver/txn/range.go: rangeLimit), but
// sends and decodes no more than the limit.
type semRule struct {
	limit int64
	name  string
}

func (r semRule) Reads(prefix string, maxRev int64) []clientv3.Op {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend)}
	if maxRev != 0 {
		opts = append(opts, clientv3.WithMaxCreateRev(maxRev-1), clientv3.WithSerializable(), clientv3.WithLimit(r.limit))
	} else {
		// In the enqueue Txn, where the new key is the newest (and Judge
		// skips it).
		opts = append(opts, clientv3.WithLimit(r.limit+1))
	}
	return []clientv3.Op{clientv3.OpGet(prefix, opts...)}
}

func (r semRule) Judge(self queue.Entry, resps []*pb.RangeResponse) queue.Verdict {
	var (
		older []queue.Entry
		sum   int64
	)
	for _, kv := range resps[0].Kvs {
		if kv.CreateRevision >= self.Rev {
			continue
		}
		k, limit, ok := parseSemKey(kv.Key)
		if !ok {
			return queue.Verdict{Err: notSemKey(r.name, kv.Key)}
		}
		if limit != r.limit {
			return queue.Verdict{Err: &LimitMismatchError{Name: r.name, Limit: r.limit, Stored: limit, Key: string(kv.Key)}}
		}
		older = append(older, queue.Entry{Key: string(kv.Key), Rev: kv.CreateRevision, Weight: k})
		sum += k
	}
	// Oldest first (the reads come newest first; a status reader's
	// snapshot in key order).
	slices.SortFunc(older, func(a, b queue.Entry) int { return cmp.Compare(a.Rev, b.Rev) })
	// More: older keys beyond the limit read, each of at least one permit.
	if !resps[0].More && sum+self.Weight <= r.limit {
		return queue.Verdict{Admitted: true}
	}
	// The window, nearest first. With More, the limit keys read weigh at
	// least limit > limit-k: the window is among them.
	var win int64
	i := len(older)
	for i > 0 && win <= r.limit-self.Weight {
		i--
		win += older[i].Weight
	}
	// Any delete among them wakes the waiter: each weighs at least 1.
	return queue.Verdict{Blockers: slices.Clone(older[i:]), Threshold: win - 1}
}

// TryIf is nil: whether k permits fit is a sum etcd cannot compare, so a
// try enqueues, judges, and removes its key when refused.
func (semRule) TryIf(string) []clientv3.Cmp { return nil }
