package lock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/lock"
)

// TestLostErrorAt: a lost hold's error says when the loss was found,
// after the key's delete was sent and no later than Done was seen closed,
// whenever the code that looks at it runs.
func TestLostErrorAt(t *testing.T) {
	e := newEnv(t)
	m := e.mutex(e.cli, "lostat")
	h := mustLock(t, m)
	before := time.Now()
	if _, err := e.client().Delete(ctxT(t, 5*time.Second), h.Token().Key); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed 10s after the key's delete")
	}
	seen := time.Now()
	time.Sleep(50 * time.Millisecond) // a late reader must still get the loss's own time
	var lost *lock.LostError
	if err := h.Err(); !errors.As(err, &lost) || !errors.Is(err, lock.ErrDeleted) {
		t.Fatalf("Err = %v, want a *LostError for ErrDeleted", err)
	}
	if lost.At.Before(before) || lost.At.After(seen) {
		t.Fatalf("LostError.At = %v, want within [%v, %v]", lost.At, before, seen)
	}
}
