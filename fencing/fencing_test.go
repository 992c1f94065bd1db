package fencing_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration"
)

func TestMain(m *testing.M) { integration.Main(m) }

func TestFenceAdmit(t *testing.T) {
	var f fencing.Fence
	tok := func(rev int64) fencing.Token { return fencing.Token{Key: "k", Revision: rev} }
	steps := []struct {
		res  string
		rev  int64
		want error
	}{
		{"r", 5, nil},
		{"r", 5, nil}, // the same holder again
		{"r", 4, fencing.ErrStale},
		{"r", 9, nil},
		{"r", 5, fencing.ErrStale},
		{"other", 1, nil}, // resources are independent
		{"r", 0, fencing.ErrStale},
	}
	for i, s := range steps {
		err := f.Admit(s.res, tok(s.rev))
		if !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
			t.Fatalf("step %d: Admit(%s, %d) = %v, want %v", i, s.res, s.rev, err, s.want)
		}
	}
	if h := f.Highest("r"); h != 9 {
		t.Fatalf("Highest = %d, want 9", h)
	}
	var se *fencing.StaleError
	if err := f.Admit("r", tok(3)); !errors.As(err, &se) || se.Highest != 9 || se.Token.Revision != 3 {
		t.Fatalf("StaleError = %#v", err)
	}
	if err := f.Admit("r", fencing.Token{}); err == nil {
		t.Fatal("zero token admitted")
	}
}

// TestFenceConcurrent admits tokens from many goroutines: whatever the
// interleaving, the admitted sequence never goes down.
func TestFenceConcurrent(t *testing.T) {
	var (
		f   fencing.Fence
		mu  sync.Mutex
		seq []int64
		wg  sync.WaitGroup
	)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				rev := int64(i*8 + g + 1)
				_ = f.Do("r", fencing.Token{Key: "k", Revision: rev}, func() error {
					mu.Lock()
					seq = append(seq, rev)
					mu.Unlock()
					return nil
				})
			}
		})
	}
	wg.Wait()
	for i := 1; i < len(seq); i++ {
		if seq[i] < seq[i-1] {
			t.Fatalf("admitted %d after %d", seq[i], seq[i-1])
		}
	}
	if f.Highest("r") != 8*200 {
		t.Fatalf("Highest = %d", f.Highest("r"))
	}
}

func TestCommit(t *testing.T) {
	cli := integration.Shared(t).Client(t)
	ns := integration.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	holder := ns + "holder"
	put, err := cli.Put(ctx, holder, "")
	if err != nil {
		t.Fatal(err)
	}
	tok := fencing.Token{Key: holder, Revision: put.Header.Revision}
	if _, err := fencing.Commit(ctx, cli, tok, clientv3.OpPut(ns+"data", "a")); err != nil {
		t.Fatalf("Commit while current: %v", err)
	}
	// Re-create the holder key: same name, new revision. The old token must fail.
	if _, err := cli.Delete(ctx, holder); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, holder, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := fencing.Commit(ctx, cli, tok, clientv3.OpPut(ns+"data", "b")); !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("Commit with stale token = %v, want ErrFenced", err)
	}
	if _, err := fencing.Commit(ctx, cli, fencing.Token{}, clientv3.OpPut(ns+"data", "c")); !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("Commit with zero token = %v, want ErrFenced", err)
	}
	resp, err := cli.Get(ctx, ns+"data")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "a" {
		t.Fatalf("data = %v, %v; want a", resp, err)
	}
	if _, err := cli.Delete(ctx, ns, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	integration.RequireEmpty(t, cli, ns)
}

func TestTokenString(t *testing.T) {
	tok := fencing.Token{Key: "etcdlock/mutex/a/1", Revision: 42}
	if s := tok.String(); s != "42@etcdlock/mutex/a/1" {
		t.Fatalf("String = %q", s)
	}
	if !tok.Newer(fencing.Token{Revision: 41}) || tok.Newer(tok) {
		t.Fatal("Newer")
	}
	if tok.IsZero() || !(fencing.Token{}).IsZero() {
		t.Fatal("IsZero")
	}
	for key, want := range map[string]string{
		"etcdlock/mutex/a/1":              "etcdlock/mutex/a/",
		"etcdlock/rw/a%2Fb/w/00ff-0a":     "etcdlock/rw/a%2Fb/w/",
		"etcdlock/election/leader/0001-2": "etcdlock/election/leader/",
		"a/":                              "a/",
		"no-slash":                        "",
		"":                                "",
	} {
		if got := (fencing.Token{Key: key, Revision: 1}).LockKey(); got != want {
			t.Errorf("LockKey of %q = %q, want %q", key, got, want)
		}
	}
}

// TestFenceResourcesIndependent: an access running under Do on one
// resource holds up admissions for that resource only.
func TestFenceResourcesIndependent(t *testing.T) {
	var f fencing.Fence
	tok := fencing.Token{Key: "k", Revision: 5}
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- f.Do("slow", tok, func() error {
			close(inside)
			<-release // a long write, say
			return nil
		})
	}()
	<-inside
	admitted := make(chan error, 1)
	go func() { admitted <- f.Admit("other", tok) }()
	waited := false
	select {
	case err := <-admitted:
		if err != nil {
			t.Errorf("Admit for another resource = %v", err)
		}
	case <-time.After(10 * time.Second): // a hang detector: Admit does no I/O
		t.Error("Admit for another resource waited for a Do on the first")
		waited = true
	}
	highest := make(chan int64, 1)
	go func() { highest <- f.Highest("slow") }()
	select {
	case got := <-highest:
		if got != 5 {
			t.Errorf("Highest during Do = %d, want 5", got)
		}
	case <-time.After(10 * time.Second):
		t.Error("Highest waited for a Do's fn")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if waited {
		<-admitted
	}
	// The same resource still serializes: a lower token is refused after.
	if err := f.Admit("slow", fencing.Token{Key: "k", Revision: 4}); !errors.Is(err, fencing.ErrStale) {
		t.Errorf("Admit of a lower token = %v, want ErrStale", err)
	}
}

// TestFenceRefusesRevisionless: a token with no revision is refused and
// leaves no record of the resource.
func TestFenceRefusesRevisionless(t *testing.T) {
	var f fencing.Fence
	for _, tok := range []fencing.Token{{}, {Key: "k"}, {Key: "k", Revision: -1}} {
		if err := f.Admit("r", tok); !errors.Is(err, fencing.ErrStale) {
			t.Errorf("Admit(%v) = %v, want ErrStale", tok, err)
		}
	}
	if h := f.Highest("r"); h != 0 {
		t.Errorf("Highest = %d after refusals only", h)
	}
}

// TestFenceRevisionOnly: a resource handed only the revision (as etcdlock
// run's $ETCDLOCK_TOKEN) fences with it alone, against tokens with keys
// too.
func TestFenceRevisionOnly(t *testing.T) {
	var f fencing.Fence
	if err := f.Admit("r", fencing.Token{Revision: 5}); err != nil {
		t.Fatalf("Admit(revision 5) = %v", err)
	}
	if err := f.Admit("r", fencing.Token{Key: "k", Revision: 4}); !errors.Is(err, fencing.ErrStale) {
		t.Fatalf("Admit(k@4) after 5 = %v, want ErrStale", err)
	}
	if err := f.Admit("r", fencing.Token{Key: "k", Revision: 6}); err != nil {
		t.Fatalf("Admit(k@6) = %v", err)
	}
	if err := f.Admit("r", fencing.Token{Revision: 5}); !errors.Is(err, fencing.ErrStale) {
		t.Fatalf("Admit(revision 5) after 6 = %v, want ErrStale", err)
	}
}

// TestRevisionlessTokenNeverHolds: a token with a key but no create
// revision (0, or negative) is not from a grant. Its Cmp must not hold
// while the key is absent (etcd gives an absent key create revision 0),
// and Commit must refuse it without applying anything. A token without a
// key is refused by Commit as ErrFenced too, not sent to etcd.
func TestRevisionlessTokenNeverHolds(t *testing.T) {
	cli := integration.Shared(t).Client(t)
	ns := integration.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tok := range []fencing.Token{{Key: ns + "absent"}, {Key: ns + "absent", Revision: -1}} {
		resp, err := cli.Txn(ctx).If(tok.Cmp()).Then(clientv3.OpPut(ns+"data", "cmp")).Commit()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Succeeded {
			t.Errorf("Cmp of %v held while its key is absent", tok)
		}
		if _, err := fencing.Commit(ctx, cli, tok, clientv3.OpPut(ns+"data", "commit")); !errors.Is(err, fencing.ErrFenced) {
			t.Errorf("Commit(%v) = %v, want ErrFenced", tok, err)
		}
	}
	if _, err := fencing.Commit(ctx, cli, fencing.Token{Revision: 5}, clientv3.OpPut(ns+"data", "nokey")); !errors.Is(err, fencing.ErrFenced) {
		t.Errorf("Commit of a token without a key = %v, want ErrFenced", err)
	}
	resp, err := cli.Get(ctx, ns, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		t.Errorf("written without a hold: %s = %s", kv.Key, kv.Value)
	}
	if _, err := cli.Delete(ctx, ns, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
}
