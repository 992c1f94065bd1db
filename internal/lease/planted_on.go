//go:build etcdlock_bugs

package lease

import "github.com/etcdlock/etcdlock/internal/bugs"

// plantedBugs says that the fault suite's planted bugs are compiled in
// (see package bugs): true in this build, tagged etcdlock_bugs.
const plantedBugs = bugs.Compiled

// plantedBug is a bug of package bugs that this package plants.
type plantedBug bugs.Bug

// The bugs planted here.
const (
	receiveTimeDeadline = plantedBug(bugs.ReceiveTimeDeadline)
)

// planted reports whether bug b is switched on.
func planted(b plantedBug) bool { return bugs.On(bugs.Bug(b)) }
