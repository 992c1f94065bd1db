package main

import (
	"context"
	"testing"
	"time"
)

// TestFloorExclusive runs the floor cells, with and without the confirm
// read, with 4 contenders, until at least 100 grants past the warm-up's have
// been checked: each grant found no other holder (the cell fails
// otherwise), the grants' revisions grow (the queue's order, one holder
// after another), every grant measured is among them, and no key is left.
func TestFloorExclusive(t *testing.T) {
	e, root := scaleEnv(t)
	const n, want = 4, 100
	for _, confirm := range []bool{true, false} {
		checked := 0
		for run := 0; checked < want; run++ {
			if run == 50 {
				t.Fatalf("confirm %v: %d grants checked in %d runs, want %d", confirm, checked, run, want)
			}
			ns := root + map[bool]string{true: "floor/", false: "floor-noread/"}[confirm]
			s, grants, err := measureFloor(context.Background(), e, ns, 200*time.Millisecond, n, confirm)
			if err != nil {
				t.Fatalf("confirm %v: %v", confirm, err)
			}
			if err := e.checkEmpty(ns); err != nil {
				t.Fatalf("confirm %v: %v", confirm, err)
			}
			// The warm-up's n grants, then at least those measured.
			if len(grants) < n+s.ops {
				t.Fatalf("confirm %v: %d grants measured, %d in all; want at least %d in all", confirm, s.ops, len(grants), n+s.ops)
			}
			for i := 1; i < len(grants); i++ {
				if grants[i] <= grants[i-1] {
					t.Fatalf("confirm %v: grant %d at revision %d after grant %d at %d: not one holder after another", confirm, i, grants[i], i-1, grants[i-1])
				}
			}
			checked += len(grants) - n
		}
	}
}
