package main

import (
	"context"
	"testing"
	"time"
)

// TestFloorExclusive runs the floor cells, with and without the confirm
// read, with 4 contenders for a few hundred grants: each grant found no
// other holder (the cell fails otherwise), the grants' revisions grow (the
// queue's order, one holder after another), every grant measured is among
// them, and no key is left.
func TestFloorExclusive(t *testing.T) {
	e, root := scaleEnv(t)
	for _, confirm := range []bool{true, false} {
		ns := root + map[bool]string{true: "floor/", false: "floor-noread/"}[confirm]
		const n = 4
		s, grants, err := measureFloor(context.Background(), e, ns, 300*time.Millisecond, n, confirm)
		if err != nil {
			t.Fatalf("confirm %v: %v", confirm, err)
		}
		if err := e.checkEmpty(ns); err != nil {
			t.Fatalf("confirm %v: %v", confirm, err)
		}
		// The warm-up's n grants, then at least those measured.
		if s.ops < n || len(grants) < n+s.ops {
			t.Fatalf("confirm %v: %d grants measured, %d in all; want at least %d measured and %d in all", confirm, s.ops, len(grants), n, n+s.ops)
		}
		for i := 1; i < len(grants); i++ {
			if grants[i] <= grants[i-1] {
				t.Fatalf("confirm %v: grant %d at revision %d after grant %d at %d: not one holder after another", confirm, i, grants[i], i-1, grants[i-1])
			}
		}
		// Every contender waited in turn: each was granted.
		if len(s.byContender) != n {
			t.Fatalf("confirm %v: grants by contender %v, want %d counts", confirm, s.byContender, n)
		}
		for i, g := range s.byContender {
			if g == 0 {
				t.Errorf("confirm %v: contender %d was never granted: %v", confirm, i, s.byContender)
			}
		}
	}
}
