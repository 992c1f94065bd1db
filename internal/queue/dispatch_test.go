package queue

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/integration"
)

func TestMain(m *testing.M) { integration.Main(m) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dispatcherEnv is a dispatcher on a fresh namespace and the client behind it.
type dispatcherEnv struct {
	t      *testing.T
	cli    *clientv3.Client
	prefix string
	d      *dispatcher
}

func newDispatcherEnv(t *testing.T) *dispatcherEnv {
	t.Helper()
	cli := integration.Shared(t).Client(t)
	ns := integration.Namespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	e := &dispatcherEnv{t: t, cli: cli, prefix: ns + "q/", d: newDispatcher(ctx, cli, ns+"q/", zap.NewNop())}
	t.Cleanup(func() {
		cancel()
		e.d.close()
		integration.RequireEmpty(t, cli, ns)
	})
	if _, err := e.d.waitUp(ctxT(t, 10*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	return e
}

// put creates key (under the prefix) and returns its entry.
func (e *dispatcherEnv) put(key string) Entry {
	e.t.Helper()
	r, err := e.cli.Put(ctxT(e.t, 5*time.Second), e.prefix+key, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return Entry{Key: e.prefix + key, Rev: r.Header.Revision, Weight: 1}
}

func (e *dispatcherEnv) del(key string) int64 {
	e.t.Helper()
	r, err := e.cli.Delete(ctxT(e.t, 5*time.Second), e.prefix+key)
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Header.Revision
}

// until waits for s's signals until st holds of its state.
func until(t *testing.T, s *sub, what string, st func(state) bool) state {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if x := s.state(); st(x) {
			return x
		}
		select {
		case <-s.c:
		case <-deadline:
			t.Fatalf("%s: not within 10s; state %+v", what, s.state())
		}
	}
}

// Deletes reach the registrations that name the key, whether they happen
// after the registration or between the registrant's read and it (from
// the delete log); a delete of an earlier key of the same name does not.
func TestDispatcherRoutesDeletes(t *testing.T) {
	e := newDispatcherEnv(t)
	a, b, own := e.put("a"), e.put("b"), e.put("own")
	old := e.put("reused")
	e.del("reused")
	reused := e.put("reused") // same name, newer key
	readRev := reused.Rev
	e.del("b") // after the read, before the registration

	s := e.d.register(readRev, own, []Entry{a, b, reused})
	if s == nil {
		t.Fatal("register as of a read after the watch was up = nil")
	}
	defer s.close()
	st := until(t, s, "b's delete, logged before the registration", func(x state) bool { return x.gone == 1 })
	if st.ownGone || st.broken {
		t.Fatalf("state %+v after b's delete", st)
	}
	e.del("a")
	until(t, s, "a's delete", func(x state) bool { return x.gone == 2 })
	if old.Rev >= reused.Rev {
		t.Fatalf("revisions %d, %d", old.Rev, reused.Rev)
	}
	e.del("reused")
	until(t, s, "the reused name's delete", func(x state) bool { return x.gone == 3 })
	e.del("own")
	until(t, s, "own key's delete", func(x state) bool { return x.ownGone })
}

// A registration whose own key or a blocker went between the registrant's
// read and the registration has its channel signalled at once: a waiter
// waits on the channel alone, and once missed the revoke of its session
// that way, until the lease's TTL ran out.
func TestDispatcherSignalsWhatWentBeforeRegistration(t *testing.T) {
	e := newDispatcherEnv(t)
	for _, tc := range []struct {
		name    string
		gone    func(own, blocker string)
		ownGone bool
	}{
		{"own key", func(own, _ string) { e.del(own) }, true},
		{"blocker", func(_, blocker string) { e.del(blocker) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			own, blocker := e.put(tc.name+"/own"), e.put(tc.name+"/blocker")
			readRev := blocker.Rev
			tc.gone(tc.name+"/own", tc.name+"/blocker")
			// Wait until the delete is logged: a sentinel deleted after it
			// is routed after it.
			sentinel := e.put(tc.name + "/sentinel")
			s0 := e.d.register(sentinel.Rev, sentinel, nil)
			if s0 == nil {
				t.Fatal("register of the sentinel = nil")
			}
			defer s0.close()
			e.del(tc.name + "/sentinel")
			until(t, s0, "the sentinel's delete", func(x state) bool { return x.ownGone })

			s := e.d.register(readRev, own, []Entry{blocker})
			if s == nil {
				t.Fatal("register as of a read after the watch was up = nil")
			}
			defer s.close()
			select {
			case <-s.c:
			default:
				t.Fatalf("no signal for a delete logged before the registration; state %+v", s.state())
			}
			if st := s.state(); st.ownGone != tc.ownGone || st.gone != map[bool]int64{true: 0, false: 1}[tc.ownGone] {
				t.Errorf("state %+v", st)
			}
			if !tc.ownGone {
				e.del(tc.name + "/own")
			} else {
				e.del(tc.name + "/blocker")
			}
		})
	}
}

// Once more deletes than the log keeps have passed since a read, a
// registration as of that read is refused (the caller must read again),
// and one as of a later read is taken.
func TestDispatcherRefusesReadsBeforeItsLog(t *testing.T) {
	e := newDispatcherEnv(t)
	first := e.put("first")
	readRev := first.Rev
	n := deleteLogCap + 10
	for i := range n {
		e.put(fmt.Sprintf("k%04d", i))
	}
	last := e.put("last")
	// A sentinel: once its delete is routed, every earlier one was logged.
	s0 := e.d.register(last.Rev, last, nil)
	if s0 == nil {
		t.Fatal("register of the sentinel = nil")
	}
	defer s0.close()
	ops := make([]clientv3.Op, 0, 128)
	for i := range n {
		ops = append(ops, clientv3.OpDelete(e.prefix+fmt.Sprintf("k%04d", i)))
		if len(ops) == cap(ops) || i == n-1 {
			// One Txn deletes distinct keys at one revision; the log counts
			// each delete.
			if _, err := e.cli.Txn(ctxT(t, 5*time.Second)).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	lastDel := e.del("last")
	until(t, s0, "the sentinel's delete", func(x state) bool { return x.ownGone })

	if s := e.d.register(readRev, first, nil); s != nil {
		s.close()
		t.Fatalf("register as of revision %d, %d deletes ago (log of %d) was taken", readRev, n, deleteLogCap)
	}
	s := e.d.register(lastDel, first, nil)
	if s == nil {
		t.Fatal("register as of a fresh read = nil")
	}
	defer s.close()
	e.del("first")
	until(t, s, "first's delete", func(x state) bool { return x.ownGone })
}
