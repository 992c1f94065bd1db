//go:build unix

package cmdline

import (
	"os"
	"syscall"
)

// StopSignals are the signals that make a command give up: before etcdlock
// run's or elect's CMD runs, or the fault suite's run.
var StopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// signalNames name the signals etcdlock catches.
var signalNames = map[syscall.Signal]string{
	syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM", syscall.SIGHUP: "SIGHUP",
	syscall.SIGQUIT: "SIGQUIT", syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2",
}

// SignalName returns sig's name, "SIGINT" say.
func SignalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok && signalNames[s] != "" {
		return signalNames[s]
	}
	return sig.String()
}

// SignalNumber returns the number of sig, or 0.
func SignalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 0
}
