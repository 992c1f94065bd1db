package lock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/lock"
)

// inspect runs lock.Inspect on e's namespace and returns the queue of kind,
// checking what every Status must satisfy.
func (e *env) inspect(name string, kind lock.Kind) *lock.LockState {
	e.t.Helper()
	st, err := lock.Inspect(ctxT(e.t, 10*time.Second), e.cli, e.ns, name)
	if err != nil {
		e.t.Fatalf("Inspect: %v", err)
	}
	if st.Name != name || st.Namespace != e.ns || st.Revision <= 0 || len(st.Locks) != 3 ||
		st.Locks[0].Kind != lock.KindMutex || st.Locks[1].Kind != lock.KindRWMutex || st.Locks[2].Kind != lock.KindSemaphore {
		e.t.Fatalf("Inspect = %+v", st)
	}
	for _, q := range st.Locks {
		last := int64(0)
		for i, en := range q.Keys {
			if en.Token.Revision <= last || en.Token.Key != en.Key || en.Token.Revision > st.Revision {
				e.t.Errorf("%s entry %d = %+v: want a token above %d, at most %d, of its key", q.Kind, i, en, last, st.Revision)
			}
			last = en.Token.Revision
		}
	}
	return st.Lock(kind)
}

// shape is what a test expects of one entry.
type shape struct {
	holding bool
	mode    lock.Mode
	permits int64
	holder  string // "" for any
}

// checkQueue fails t unless q's entries, in order, have the given shapes,
// have no Err, and are under prefix.
func checkQueue(t *testing.T, q *lock.LockState, prefix string, want ...shape) {
	t.Helper()
	if q.Prefix != prefix {
		t.Errorf("%s prefix = %q, want %q", q.Kind, q.Prefix, prefix)
	}
	if len(q.Keys) != len(want) {
		t.Fatalf("%s: %d entries, want %d: %+v", q.Kind, len(q.Keys), len(want), q.Keys)
	}
	for i, w := range want {
		en := q.Keys[i]
		got := shape{en.Holding, en.Mode, en.Permits, en.Holder}
		if w.holder == "" {
			got.holder = ""
		}
		if got != w || en.Err != nil || en.Waiting() == w.holding || en.Lease == 0 || len(en.Key) <= len(prefix) || en.Key[:len(prefix)] != prefix {
			t.Errorf("%s entry %d = %+v, want %+v, no error, a lease, a key under %s", q.Kind, i, en, w, prefix)
		}
	}
}

// A mutex with one holder and two waiters: the oldest holds, the others
// wait in order; when the holder unlocks, the next holds.
func TestInspectMutex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var ms []*lock.Mutex
	for _, holder := range []string{"a", "b", "c"} {
		ms = append(ms, e.mutex(e.cli, "insp", lock.WithHolder(holder), lock.WithTTL(2*time.Second)))
	}
	prefix := ms[0].Prefix()
	checkQueue(t, e.inspect("insp", lock.KindMutex), prefix)

	ha := mustLock(t, ms[0])
	pb := goAcquire(func() (*lock.Hold, error) { return ms[1].Lock(ctxT(t, 20*time.Second)) })
	waitKeys(t, e.cli, prefix, 2)
	pc := goAcquire(func() (*lock.Hold, error) { return ms[2].Lock(ctxT(t, 20*time.Second)) })
	waitKeys(t, e.cli, prefix, 3)

	q := e.inspect("insp", lock.KindMutex)
	checkQueue(t, q, prefix, shape{true, "", 0, "a"}, shape{false, "", 0, "b"}, shape{false, "", 0, "c"})
	if q.Keys[0].Token != ha.Token() || q.Keys[0].Lease != ha.Lease() {
		t.Errorf("holder = %+v, want token %v and lease %x", q.Keys[0], ha.Token(), ha.Lease())
	}
	if q.Limit != 0 {
		t.Errorf("mutex limit = %d", q.Limit)
	}

	mustUnlock(t, ha)
	hb := grantedHold(t, pb, "b's Lock")
	stillWaiting(t, pc, "c's Lock")
	checkQueue(t, e.inspect("insp", lock.KindMutex), prefix, shape{true, "", 0, "b"}, shape{false, "", 0, "c"})
	mustUnlock(t, hb)
	mustUnlock(t, grantedHold(t, pc, "c's Lock"))
}

// An RWMutex with two readers holding, a writer waiting and a reader
// waiting behind the writer; then the writer holds, then the last reader.
func TestInspectRWMutex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.rwmutex(e.cli, "insp")
	prefix := m.Prefix()
	r1, r2 := mustRLock(t, m), mustRLock(t, m)
	pw := goAcquire(func() (*lock.Hold, error) { return m.Lock(ctxT(t, 20*time.Second)) })
	waitKeys(t, e.cli, prefix, 3)
	pr := goAcquire(func() (*lock.Hold, error) { return m.RLock(ctxT(t, 20*time.Second)) })
	waitKeys(t, e.cli, prefix, 4)

	q := e.inspect("insp", lock.KindRWMutex)
	checkQueue(t, q, prefix,
		shape{true, lock.ModeRead, 0, ""}, shape{true, lock.ModeRead, 0, ""},
		shape{false, lock.ModeWrite, 0, ""}, shape{false, lock.ModeRead, 0, ""})
	if q.Keys[0].Token != r1.Token() || q.Keys[1].Token != r2.Token() {
		t.Errorf("readers %v, %v; Inspect shows %v, %v", r1.Token(), r2.Token(), q.Keys[0].Token, q.Keys[1].Token)
	}

	mustUnlock(t, r1)
	checkQueue(t, e.inspect("insp", lock.KindRWMutex), prefix,
		shape{true, lock.ModeRead, 0, ""}, shape{false, lock.ModeWrite, 0, ""}, shape{false, lock.ModeRead, 0, ""})
	mustUnlock(t, r2)
	w := grantedHold(t, pw, "writer")
	stillWaiting(t, pr, "reader behind the writer")
	checkQueue(t, e.inspect("insp", lock.KindRWMutex), prefix,
		shape{true, lock.ModeWrite, 0, ""}, shape{false, lock.ModeRead, 0, ""})
	mustUnlock(t, w)
	r3 := grantedHold(t, pr, "reader behind the writer")
	checkQueue(t, e.inspect("insp", lock.KindRWMutex), prefix, shape{true, lock.ModeRead, 0, ""})
	mustUnlock(t, r3)
}

// A semaphore of 3 permits with requests for 2, 1 and 1: the first two
// hold, the third waits until permits are released.
func TestInspectSemaphore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.semaphore(e.cli, "insp", 3, lock.WithHolder("job"), lock.WithTTL(2*time.Second))
	prefix := s.Prefix()
	h2, h1 := mustAcquire(t, s, 2), mustAcquire(t, s, 1)
	p := goAcquire(func() (*lock.Hold, error) { return s.Acquire(ctxT(t, 20*time.Second), 1) })
	waitKeys(t, e.cli, prefix, 3)

	q := e.inspect("insp", lock.KindSemaphore)
	checkQueue(t, q, prefix, shape{true, "", 2, "job"}, shape{true, "", 1, "job"}, shape{false, "", 1, "job"})
	if q.Limit != 3 {
		t.Errorf("limit = %d, want 3", q.Limit)
	}
	mustUnlock(t, h1)
	h3 := grantedHold(t, p, "third request")
	checkQueue(t, e.inspect("insp", lock.KindSemaphore), prefix, shape{true, "", 2, "job"}, shape{true, "", 1, "job"})
	mustUnlock(t, h2)
	mustUnlock(t, h3)
}

// Keys the rules reject are shown with an Err, neither holding nor
// waiting, and judged as Acquire judges them: a stray key under an RWMutex
// keeps writers out but not readers; under a Semaphore it, or an entry of
// another limit, fails those behind it.
func TestInspectForeignKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t, 10*time.Second)
	m := e.rwmutex(e.cli, "insp")
	stray := m.Prefix() + "stray"
	if _, err := e.cli.Put(ctx, stray, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("TryLock behind a stray key = %v, want ErrLocked", err)
	}
	r := mustRLock(t, m)
	q := e.inspect("insp", lock.KindRWMutex)
	if len(q.Keys) != 2 || !errors.Is(q.Keys[0].Err, lock.ErrStrayKey) || q.Keys[0].Holding || q.Keys[0].Waiting() ||
		q.Keys[0].Key != stray || q.Keys[1].Err != nil || !q.Keys[1].Holding || q.Keys[1].Mode != lock.ModeRead {
		t.Errorf("RW entries behind a stray key = %+v", q.Keys)
	}
	mustUnlock(t, r)

	s := e.semaphore(e.cli, "insp", 3)
	h := mustAcquire(t, s, 1)
	other := s.Prefix() + "other"
	if _, err := e.cli.Put(ctx, other, "v1 1 5 elsewhere"); err != nil {
		t.Fatal(err)
	}
	junk := s.Prefix() + "junk"
	if _, err := e.cli.Put(ctx, junk, "hello"); err != nil {
		t.Fatal(err)
	}
	q = e.inspect("insp", lock.KindSemaphore)
	var lm *lock.LimitMismatchError
	if len(q.Keys) != 3 || q.Limit != 3 || !q.Keys[0].Holding || q.Keys[0].Err != nil ||
		!errors.As(q.Keys[1].Err, &lm) || lm.Limit != 5 || lm.Stored != 3 || lm.Key != h.Token().Key ||
		q.Keys[1].Holding || q.Keys[1].Permits != 1 || q.Keys[1].Holder != "elsewhere" ||
		!errors.Is(q.Keys[2].Err, lock.ErrLimitMismatch) || q.Keys[2].Holding || q.Keys[2].Holder != "hello" {
		t.Errorf("semaphore entries with foreign keys = %+v", q.Keys)
	}
	for _, k := range []string{stray, other, junk} {
		if _, err := e.cli.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	mustUnlock(t, h)
}

func TestInspectBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t, 10*time.Second)
	ns := e.ns
	for _, tc := range []struct {
		what string
		err  error
		run  func() (*lock.Snapshot, error)
	}{
		{"nil client", lock.ErrNilClient, func() (*lock.Snapshot, error) { return lock.Inspect(ctx, nil, ns, "x") }},
		{"empty name", lock.ErrInvalidName, func() (*lock.Snapshot, error) { return lock.Inspect(ctx, e.cli, ns, "") }},
		{"name over max", lock.ErrInvalidName, func() (*lock.Snapshot, error) {
			return lock.Inspect(ctx, e.cli, ns, strings.Repeat("n", lock.MaxNameLen+1))
		}},
		{"name not utf8", lock.ErrInvalidName, func() (*lock.Snapshot, error) { return lock.Inspect(ctx, e.cli, ns, "a\xffb") }},
		{"bad namespace", lock.ErrInvalidNamespace, func() (*lock.Snapshot, error) { return lock.Inspect(ctx, e.cli, "\xff", "x") }},
		{"namespace over max", lock.ErrInvalidNamespace, func() (*lock.Snapshot, error) {
			return lock.Inspect(ctx, e.cli, strings.Repeat("n", lock.MaxNamespaceLen+1), "x")
		}},
	} {
		if st, err := tc.run(); !errors.Is(err, tc.err) || st != nil {
			t.Errorf("Inspect with %s = %v, %v; want %v", tc.what, st, err, tc.err)
		}
	}

	cause := errors.New("gave up")
	cctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	if st, err := lock.Inspect(cctx, e.cli, ns, "x"); !errors.Is(err, cause) || st != nil {
		t.Errorf("Inspect with an ended context = %v, %v; want its cause", st, err)
	}

	// A name nobody uses: three empty queues, at the constructors' prefixes.
	m := e.mutex(e.cli, "a/b")
	rw := e.rwmutex(e.cli, "a/b")
	s := e.semaphore(e.cli, "a/b", 1)
	st, err := lock.Inspect(ctx, e.cli, ns, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	for i, prefix := range []string{m.Prefix(), rw.Prefix(), s.Prefix()} {
		if q := st.Locks[i]; q.Prefix != prefix || len(q.Keys) != 0 || q.Limit != 0 {
			t.Errorf("queue %d of an unused name = %+v, want no entries under %s", i, q, prefix)
		}
	}
	if st.Lock("election") != nil {
		t.Error("Queue of an unknown kind is not nil")
	}
}
