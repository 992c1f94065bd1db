//go:build !unix

package main

import (
	"errors"
	"io"
	"os"
)

// Running a command under a lock needs Unix process groups and signals.
var (
	forwardedSignals = []os.Signal{os.Interrupt}
	droppedSignals   []os.Signal
)

var errNoChild = errors.New("running a command is supported on Unix only")

type child struct{ exited chan struct{} }

func startChild(path string, argv, env []string, stdout, stderr io.Writer) (*child, error) {
	return nil, errNoChild
}

func (c *child) signal(os.Signal) {}

func (c *child) finish() int { return exitRunFailure }
