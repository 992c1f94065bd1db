//go:build !etcdlock_bugs

package lease

// plantedBugs says that the fault suite's planted bugs are compiled in: not
// in this build, which does not even import package bugs, so that every
// "plantedBugs && planted(...)" branch is dropped by the compiler.
const plantedBugs = false

// plantedBug names a planted bug; see package bugs.
type plantedBug int

// The bugs planted here.
const (
	receiveTimeDeadline plantedBug = iota
)

// planted reports false: no bug is compiled in.
func planted(plantedBug) bool { return false }
