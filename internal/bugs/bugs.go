// Package bugs holds switches that plant known bugs in the library, for the
// fault-injection suite to prove that its checkers catch them. They are
// internal, so no user of the module can turn them on; all are off unless a
// test turns them on.
package bugs

import "sync/atomic"

var (
	// SkipOwnershipCheck admits a waiter as soon as the key it waits for is
	// deleted, without the confirming read of its own key and of older keys.
	SkipOwnershipCheck atomic.Bool
	// LeaseIDToken reports the lease ID as the fencing token instead of the
	// key's create revision (etcd's contrib/lock example does this).
	LeaseIDToken atomic.Bool
	// UnlockByName derives waiter keys from the lease alone, as etcd's
	// concurrency.Mutex does, and unlocks by key name without the create
	// revision guard, so a stale unlock can delete a newer hold.
	UnlockByName atomic.Bool
	// ReceiveTimeDeadline measures the lease deadline from the time a
	// renewal's response was received rather than the time it was sent.
	ReceiveTimeDeadline atomic.Bool
)
