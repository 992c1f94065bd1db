package fencing_test

import (
	"errors"
	"fmt"

	"github.com/etcdlock/etcdlock/fencing"
)

// A resource outside etcd keeps a Fence and admits every access, reads as
// well as writes, with the caller's token. A holder whose lock passed to
// someone else while it was paused is refused.
func ExampleFence() {
	var f fencing.Fence
	stale := fencing.Token{Key: "etcdlock/mutex/db/a", Revision: 17}
	current := fencing.Token{Key: "etcdlock/mutex/db/b", Revision: 23}

	fmt.Println(f.Admit("orders", current)) // the current holder writes
	err := f.Admit("orders", stale)         // the paused one wakes up
	fmt.Println(errors.Is(err, fencing.ErrStale))
	fmt.Println(err)
	// Output:
	// <nil>
	// true
	// fencing: stale token 17@etcdlock/mutex/db/a for "orders": highest admitted is 23
}
