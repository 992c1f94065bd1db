package main

import (
	"os"
	"syscall"
	"unsafe"

	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// selfPath returns the path that executes this program.
func selfPath() (string, error) { return "/proc/self/exe", nil }

// cmdProcAttr returns CMD's process attributes: a parent-death signal, so
// that CMD dies with its guard even if the guard is killed on its own.
func cmdProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// waitExited blocks until the process pid has exited, without reaping it,
// and reports whether it could.
func waitExited(pid int) bool {
	const pPID = 1     // P_PID
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		switch errno {
		case 0:
			return true
		case syscall.EINTR:
			continue
		default:
			return false
		}
	}
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool { return cmdline.IsTerminal(f) }
