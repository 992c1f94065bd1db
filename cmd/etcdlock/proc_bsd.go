//go:build unix && !linux

package main

import (
	"os"
	"syscall"
)

// selfPath returns the path that executes this program.
func selfPath() (string, error) { return os.Executable() }

// cmdProcAttr returns CMD's process attributes: there is no parent-death
// signal outside Linux; the guard's lifeline does the job alone.
func cmdProcAttr() *syscall.SysProcAttr { return nil }

// waitExited would wait for pid to exit without reaping it; it reports
// false: the caller reaps it, and cannot then safely kill what is left of
// its process group (the guard does that itself before it exits).
func waitExited(pid int) bool { return false }

// isTerminal reports whether f is a character device other than /dev/null.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}
