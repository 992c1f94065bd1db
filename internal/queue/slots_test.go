package queue

import (
	"strings"
	"testing"
)

// Slots shared by two prefixes (a read-write lock's queues) give each
// prefix's keys under it, reuse a name only once it is given back, and
// start anew with a new lease.
func TestSlotsNames(t *testing.T) {
	var s Slots
	a0, freeA0 := s.take("p/r/", 1)
	b1, freeB1 := s.take("p/w/", 1)
	if !strings.HasPrefix(a0, "p/r/") || !strings.HasPrefix(b1, "p/w/") {
		t.Fatalf("keys %q, %q not under their prefixes", a0, b1)
	}
	freeA0()
	freeA0() // a second give-back is ignored
	b0, _ := s.take("p/w/", 1)
	if b0 == b1 || !strings.HasPrefix(b0, "p/w/") || strings.TrimPrefix(b0, "p/w/") != strings.TrimPrefix(a0, "p/r/") {
		t.Fatalf("slot 0 again under p/w/ = %q (a0 %q, b1 %q)", b0, a0, b1)
	}
	a2, _ := s.take("p/r/", 1)
	if a2 == a0 {
		t.Fatalf("slot in use taken twice: %q", a2)
	}
	freeB1()
	n1, _ := s.take("p/r/", 2)
	if n1 == a0 || strings.Contains(n1, "0000000000000001-") {
		t.Fatalf("new lease reused an old lease's name: %q", n1)
	}
}
