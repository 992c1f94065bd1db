package fencing_test

import (
	"errors"
	"testing"

	"github.com/etcdlock/etcdlock/fencing"
)

func TestRWFence(t *testing.T) {
	tok := func(rev int64) fencing.Token { return fencing.Token{Key: "k", Revision: rev} }
	var f fencing.RWFence
	steps := []struct {
		write bool
		rev   int64
		ok    bool
	}{
		{false, 3, true},  // a reader
		{true, 5, true},   // a writer after it
		{false, 4, false}, // a reader older than the writer: stale
		{false, 7, true},  // readers after the writer, in any order
		{false, 6, true},
		{true, 6, false}, // a writer older than a reader that read: stale
		{true, 8, true},
		{true, 8, true}, // the same writer again
		{false, 8, true},
		{false, 0, false}, // zero token
	}
	for i, s := range steps {
		var err error
		if s.write {
			err = f.AdmitWrite("r", tok(s.rev))
		} else {
			err = f.AdmitRead("r", tok(s.rev))
		}
		if (err == nil) != s.ok || (err != nil && !errors.Is(err, fencing.ErrStale)) {
			t.Fatalf("step %d (write %v, rev %d): %v, want ok %v", i, s.write, s.rev, err, s.ok)
		}
	}
	if all, w := f.Highest("r"); all != 8 || w != 8 {
		t.Fatalf("Highest = %d, %d; want 8, 8", all, w)
	}
	if all, w := f.Highest("other"); all != 0 || w != 0 {
		t.Fatalf("Highest of unknown resource = %d, %d", all, w)
	}
}

// TestRWFenceRefusesRevisionless: a token with no revision is not from a
// grant; like fencing.Fence, an RWFence refuses it whatever it admitted
// before, and keeps no record of the resource.
func TestRWFenceRefusesRevisionless(t *testing.T) {
	var f fencing.RWFence
	for _, tok := range []fencing.Token{{Key: "k"}, {Key: "k", Revision: -1}} {
		if err := f.AdmitWrite("fresh", tok); !errors.Is(err, fencing.ErrStale) {
			t.Errorf("AdmitWrite(%v) on a fresh resource = %v, want ErrStale", tok, err)
		}
		if err := f.AdmitRead("fresh", tok); !errors.Is(err, fencing.ErrStale) {
			t.Errorf("AdmitRead(%v) on a fresh resource = %v, want ErrStale", tok, err)
		}
	}
	// Readers only so far: the read floor is still 0.
	if err := f.AdmitRead("read", fencing.Token{Key: "k", Revision: 7}); err != nil {
		t.Fatal(err)
	}
	if err := f.AdmitRead("read", fencing.Token{Key: "k"}); !errors.Is(err, fencing.ErrStale) {
		t.Errorf("AdmitRead of revision 0 after readers = %v, want ErrStale", err)
	}
}
