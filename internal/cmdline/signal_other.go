//go:build !unix

package cmdline

import "os"

// StopSignals are the signals that make a command give up.
var StopSignals = []os.Signal{os.Interrupt}

// SignalNumber returns the number of sig.
func SignalNumber(os.Signal) int { return 2 }

// SignalName returns sig's name.
func SignalName(sig os.Signal) string { return sig.String() }
