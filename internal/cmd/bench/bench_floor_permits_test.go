package main

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestPermitFloorRules runs the permit floor cells (a semaphore of 2 with 5
// contenders; 3 readers and a writer), with and without the confirm read,
// first as the bench does, then with contenders that hold for a while, so
// that holds overlap: every grant checks the rule (at most limit permits;
// the writer alone) and a grant that breaks it fails the cell. No key is
// left, and the writer holds too: it is not starved.
func TestPermitFloorRules(t *testing.T) {
	e, root := scaleEnv(t)
	type floor struct {
		c  *cell
		mk func(*floorClient, *permitRules, int) locker
	}
	sem := func(confirm bool) floor {
		return floor{semFloorCell(5, 2, confirm, nil), func(f *floorClient, r *permitRules, _ int) locker {
			return &semFloorLocker{floorClient: f, limit: 2, confirm: confirm, rules: r}
		}}
	}
	rw := func(confirm bool) floor {
		return floor{rwFloorCell(3, confirm, nil), func(f *floorClient, r *permitRules, i int) locker {
			return &rwFloorLocker{floorClient: f, writer: i == 3, confirm: confirm, rules: r}
		}}
	}
	for _, fl := range []floor{sem(true), sem(false), rw(true), rw(false)} {
		c := fl.c
		ns := root + c.impl + "/"
		s, err := c.measure(context.Background(), e, ns, 300*time.Millisecond)
		if err != nil {
			t.Fatalf("%s: %v", c.impl, err)
		}
		if err := e.checkEmpty(ns); err != nil {
			t.Fatalf("%s: %v", c.impl, err)
		}
		if s.ops == 0 {
			t.Fatalf("%s: no grant in 300ms", c.impl)
		}
		// Holds of 2 ms, 30 each.
		ns = root + c.impl + "-hold/"
		rules := &permitRules{}
		ls := make([]locker, c.contenders)
		for i := range ls {
			f, err := newFloorClient(context.Background(), e, ns+"q/")
			if err != nil {
				t.Fatal(err)
			}
			ls[i] = fl.mk(f, rules, i)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var wg sync.WaitGroup
		for i, l := range ls {
			wg.Go(func() {
				for range 30 {
					unlock, err := l.lock(ctx)
					if err != nil {
						t.Errorf("%s: contender %d: %v", c.impl, i, err)
						cancel()
						return
					}
					time.Sleep(2 * time.Millisecond)
					if err := unlock(ctx); err != nil {
						t.Errorf("%s: contender %d: %v", c.impl, i, err)
						cancel()
						return
					}
				}
			})
		}
		wg.Wait()
		cancel()
		for _, l := range ls {
			if err := l.close(); err != nil {
				t.Error(err)
			}
		}
		if err := e.checkEmpty(ns); err != nil {
			t.Fatalf("%s: %v", c.impl, err)
		}
		if t.Failed() {
			return
		}
	}
}
