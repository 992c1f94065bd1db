package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// keyLocker is a contender whose every "lock" puts a new key under ns (an
// enqueue, as the pacer sees it). At its first, it counts the keys already
// there.
type keyLocker struct {
	cli      *clientv3.Client
	ns       string
	i, calls int
	before   int64 // keys under ns when its first lock began
}

func (l *keyLocker) lock(ctx context.Context) (func(context.Context) error, error) {
	l.calls++
	if l.calls == 1 {
		resp, err := l.cli.Get(ctx, l.ns, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return nil, err
		}
		l.before = resp.Count
	}
	if _, err := l.cli.Put(ctx, fmt.Sprintf("%sk-%d-%d", l.ns, l.i, l.calls), ""); err != nil {
		return nil, err
	}
	return func(context.Context) error { return nil }, nil
}

func (l *keyLocker) close() error { return nil }

// A paced run starts contender i only once the server has applied i
// enqueues (new keys): the contenders' first enqueues never come all at
// once. Without the pacer they start together, and most find fewer keys
// than contenders before them.
func TestPacedStart(t *testing.T) {
	e, root := scaleEnv(t)
	const n = 20
	for _, paced := range []bool{true, false} {
		ns := fmt.Sprintf("%space-%v/", root, paced)
		ks := make([]*keyLocker, n)
		ls := make([]locker, n)
		for i := range ls {
			ks[i] = &keyLocker{cli: e.admin, ns: ns, i: i}
			ls[i] = ks[i]
		}
		var p *pacer
		if paced {
			p = &pacer{cli: e.admin, ns: ns}
		}
		s, err := runContendersPaced(context.Background(), ls, 100*time.Millisecond, &e.tally, p)
		if err != nil {
			t.Fatal(err)
		}
		if s.ops == 0 {
			t.Fatalf("paced %v: no operation measured", paced)
		}
		early := 0
		for i, k := range ks {
			if k.before < int64(i) {
				early++
				if paced {
					t.Errorf("paced: contender %d started with %d keys applied, want at least %d", i, k.before, i)
				}
			}
		}
		if !paced {
			t.Logf("unpaced: %d of %d contenders started with fewer keys applied than contenders before them", early, n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = e.admin.Delete(ctx, ns, clientv3.WithPrefix())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}
