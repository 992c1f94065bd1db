// Package bugs plants known bugs in the library, for the fault suite to
// prove that its checkers catch them. They exist only in a build with the
// tag etcdlock_bugs: in any other build Compiled is the constant false, and
// the library's packages do not even import this one (each has a
// planted_on.go, tagged, and a planted_off.go), so the compiler drops every
// planted branch and the binary carries no switch. Call sites read
//
//	if plantedBugs && planted(leaseIDToken) { ... }
//
// The package is internal: no user of the module can turn a bug on.
package bugs

// Bug names one planted bug.
type Bug int

// The planted bugs.
const (
	// SkipOwnershipCheck admits a waiter as soon as the key it waits for is
	// deleted, without the confirming read of its own key and of older keys.
	SkipOwnershipCheck Bug = iota
	// LeaseIDToken reports the lease ID as the fencing token instead of the
	// key's create revision (etcd's contrib/lock example does this).
	LeaseIDToken
	// UnlockByName derives waiter keys from the lease alone, as etcd's
	// concurrency.Mutex does, and unlocks by key name without the create
	// revision guard, so a stale unlock can delete a newer hold.
	UnlockByName
	// ReceiveTimeDeadline measures the lease deadline from the time a
	// renewal's response was received rather than the time it was sent.
	ReceiveTimeDeadline

	numBugs = iota
)

var names = [numBugs]string{"SkipOwnershipCheck", "LeaseIDToken", "UnlockByName", "ReceiveTimeDeadline"}

// String returns the bug's name, e.g. "LeaseIDToken".
func (b Bug) String() string { return names[b] }
