package cmdline

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"unsafe"
)

// promptPassword asks for user's password on the terminal (/dev/tty, so
// that it works with stdin and stdout redirected) with echo turned off,
// and returns it. It fails with a usage error when there is no terminal,
// and returns ctx's cause if ctx ends first (Ctrl-C).
func promptPassword(ctx context.Context, user string) (string, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return "", UsageError("no password for user %q: set $ETCDLOCK_PASSWORD, or run on a terminal", user)
	}
	defer tty.Close()
	var old syscall.Termios
	if err := termios(tty, syscall.TCGETS, &old); err != nil {
		return "", UsageError("no password for user %q: set $ETCDLOCK_PASSWORD (cannot turn off echo: %v)", user, err)
	}
	quiet := old
	quiet.Lflag &^= syscall.ECHO
	quiet.Lflag |= syscall.ICANON | syscall.ISIG
	quiet.Iflag |= syscall.ICRNL
	if err := termios(tty, syscall.TCSETS, &quiet); err != nil {
		return "", UsageError("no password for user %q: set $ETCDLOCK_PASSWORD (cannot turn off echo: %v)", user, err)
	}
	defer func() {
		_ = termios(tty, syscall.TCSETS, &old)
		fmt.Fprintln(tty)
	}()
	fmt.Fprintf(tty, "Password for etcd user %s: ", user)

	// Read on a goroutine this function waits for: when ctx ends first,
	// closing the terminal ends the read (a terminal is pollable).
	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(tty).ReadString('\n')
		done <- result{line, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		_ = termios(tty, syscall.TCSETS, &old)
		tty.Close()
		<-done
		return "", context.Cause(ctx)
	}
	if r.err != nil && r.line == "" {
		return "", UsageError("no password for user %q: reading the terminal: %v", user, r.err)
	}
	return strings.TrimRight(r.line, "\r\n"), nil
}

// termios gets or sets the terminal attributes of tty. It does not use
// tty.Fd, which would make the file blocking, so that Close could no longer
// end a read in progress.
func termios(tty *os.File, req uintptr, t *syscall.Termios) error {
	rc, err := tty.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(t)))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	var t syscall.Termios
	return termios(f, syscall.TCGETS, &t) == nil
}
