//go:build etcdlock_bugs

package bugs

import "sync/atomic"

// Compiled reports whether the planted bugs are compiled in: true in this
// build (tag etcdlock_bugs).
const Compiled = true

var switches [numBugs]atomic.Bool

// On reports whether b is switched on. It is safe for concurrent use.
func On(b Bug) bool { return switches[b].Load() }

// Set switches b on or off. It is safe for concurrent use.
func Set(b Bug, on bool) { switches[b].Store(on) }
