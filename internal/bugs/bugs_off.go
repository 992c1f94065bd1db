//go:build !etcdlock_bugs

package bugs

// Compiled reports whether the planted bugs are compiled in: false in this
// build (no tag etcdlock_bugs), so every `bugs.Compiled && ...` branch is
// removed by the compiler.
const Compiled = false

// On reports false: no bug is compiled in.
func On(Bug) bool { return false }

// Set panics: no bug is compiled in. Check Compiled first.
func Set(Bug, bool) { panic("bugs: planted bugs are not compiled in (build with -tags etcdlock_bugs)") }
