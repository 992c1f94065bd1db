//go:build unix

package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
)

// forwardedSignals are the signals etcdlock passes on to CMD's process
// group while CMD runs.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// droppedSignals are caught and dropped. SIGTSTP (Ctrl-Z) would stop
// etcdlock while CMD ran on: the lease would expire with nobody stopping
// CMD.
var droppedSignals = []os.Signal{syscall.SIGTSTP}

// guardName is argv[0] of the guard: etcdlock re-executed to lead CMD's
// process group (see startChild).
const guardName = "etcdlock-guard"

// The guard is this same program, told apart by its argv[0] before any
// command runs.
func init() {
	if len(os.Args) > 0 && os.Args[0] == guardName {
		os.Exit(guardMain(os.Args[1:]))
	}
}

// child is CMD, running under its guard in a process group of its own.
//
// The guard is etcdlock itself, re-executed as "etcdlock-guard PATH ARGV...".
// It leads the process group, starts CMD in it, and exits with CMD's status
// (128+N if signal N killed it). It holds the read end of a pipe, the
// lifeline, whose only write end is in etcdlock: when etcdlock dies, even
// by SIGKILL, the kernel closes that end, the guard reads EOF and kills the
// whole process group with SIGKILL, CMD's own children included. A
// parent-death signal alone (Linux's PR_SET_PDEATHSIG, which CMD gets too,
// for the case the guard itself is killed) reaches only the direct child,
// and "sh -c" or a script would leave its children running unguarded.
//
// Until the guard has set up its signal handlers, a signal sent to the
// group would end the guard itself (or, for SIGQUIT, make Go's runtime dump
// its goroutines) before CMD ever ran; and until CMD is started, the guard
// would be the only one to get it. So the guard says on a second pipe when
// CMD has started; signals sent before that wait in etcdlock and follow
// then, to CMD and the guard, which drops them.
type child struct {
	guard    *exec.Cmd
	pgid     int
	lifeline *os.File      // the write end
	exited   chan struct{} // closed once the guard has exited
	reaped   bool          // the guard was reaped when exited closed (not on Linux)
	waitErr  error
	status   chan int // CMD's exit status, as the guard reported it; closed when the pipe is

	mu      sync.Mutex
	isReady bool
	dead    bool             // the guard died before starting CMD: signal nothing
	pending []syscall.Signal // signals sent before the guard was ready
}

// keepZombie says to wait for the guard's exit without reaping it (where
// waitExited can), so that finish can kill CMD's group with no risk of its
// ID having been reused. Tests turn it off to check what the guard does
// alone, as outside Linux.
var keepZombie = true

// startChild starts CMD (the executable path, with argv) with env, in a new
// process group under its guard. CMD's stdin is etcdlock's unless that is a
// terminal (then /dev/null: CMD is not in the terminal's foreground process
// group, and a read from the terminal would stop it); stdout and stderr are
// the given writers.
func startChild(path string, argv, env []string, stdout, stderr io.Writer) (*child, error) {
	self, err := selfPath()
	if err != nil {
		return nil, fmt.Errorf("finding etcdlock's own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	rr, rw, err := os.Pipe()
	if err != nil {
		_, _ = r.Close(), w.Close()
		return nil, err
	}
	var stdin io.Reader
	if !isTerminal(os.Stdin) {
		stdin = os.Stdin
	}
	g := &exec.Cmd{
		Path:        self,
		Args:        append([]string{guardName, path}, argv...),
		Env:         env,
		Stdin:       stdin,
		Stdout:      stdout,
		Stderr:      stderr,
		ExtraFiles:  []*os.File{r, rw}, // fds 3 and 4 in the guard
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	err = g.Start()
	_, _ = r.Close(), rw.Close()
	if err != nil {
		_, _ = w.Close(), rr.Close()
		return nil, err
	}
	c := &child{guard: g, pgid: g.Process.Pid, lifeline: w, exited: make(chan struct{}), status: make(chan int, 1)}
	// Owned by finish, which waits for status: the guard writes a byte once
	// CMD has started and another with CMD's status once it has exited, and
	// its exit closes the pipe's only write end.
	go func() {
		defer close(c.status)
		defer rr.Close()
		var b [1]byte
		_, err := io.ReadFull(rr, b[:])
		c.mu.Lock()
		c.isReady = true
		// If the guard died before starting CMD, it may be reaped already
		// (outside Linux): its group's ID may be reused.
		c.dead = err != nil
		if !c.dead {
			for _, sig := range c.pending {
				_ = syscall.Kill(-c.pgid, sig)
			}
		}
		c.pending = nil
		c.mu.Unlock()
		if err == nil {
			if _, err := io.ReadFull(rr, b[:]); err == nil {
				c.status <- int(b[0])
			}
		}
	}()
	// Owned by finish, which waits for exited.
	go func() {
		defer close(c.exited)
		if !keepZombie || !waitExited(g.Process.Pid) {
			c.waitErr = g.Wait()
			c.reaped = true
		}
	}()
	return c, nil
}

// signal sends sig to CMD's process group. The guard, a member, drops it.
// Until the guard is ready, signals other than SIGKILL are held back and
// sent, in order, once it is.
func (c *child) signal(sig os.Signal) {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.dead:
		return
	case !c.isReady && s != syscall.SIGKILL:
		c.pending = append(c.pending, s)
		return
	}
	_ = syscall.Kill(-c.pgid, s)
}

// finish waits for the guard to exit, kills whatever CMD left running in
// its process group, reaps the guard and returns CMD's exit status.
//
// The guard kills the group itself once CMD has exited, after reporting
// CMD's status; where the guard can be waited for unreaped (Linux), finish
// kills the group again, which also covers a guard killed before it could.
func (c *child) finish() int {
	<-c.exited
	status, reported := <-c.status
	if !c.reaped {
		// The guard is a zombie, not reaped yet, so the group's ID cannot
		// have been reused: kill the leftovers, then reap.
		_ = syscall.Kill(-c.pgid, syscall.SIGKILL)
		c.waitErr = c.guard.Wait()
	}
	_ = c.lifeline.Close()
	if reported {
		return status
	}
	return exitStatus(c.guard.ProcessState)
}

// guardMain is the guard: it runs CMD (args: path, then argv) in its own
// process group and returns CMD's exit status.
func guardMain(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "etcdlock-guard: for etcdlock's internal use")
		return exitUsage
	}
	// Only as etcdlock starts it: leading a process group of its own (the
	// guard kills its whole group), with pipes on fds 3 and 4.
	isPipe := func(fd int) bool {
		var st syscall.Stat_t
		return syscall.Fstat(fd, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFIFO
	}
	if syscall.Getpgrp() != os.Getpid() || !isPipe(3) || !isPipe(4) {
		fmt.Fprintln(os.Stderr, "etcdlock-guard: for etcdlock's internal use")
		return exitUsage
	}
	lifeline := os.NewFile(3, "lifeline")
	syscall.CloseOnExec(3) // CMD does not need it
	ready := os.NewFile(4, "ready")
	syscall.CloseOnExec(4)
	// etcdlock signals the whole group: CMD gets each signal directly, and
	// the guard must live on. Catching (not ignoring) the signals keeps
	// them at their default in CMD. A signal ignored when etcdlock started
	// (SIGHUP under nohup) stays ignored, CMD included.
	caught := make(chan os.Signal, 16) // overflow is dropped, which is fine
	for _, sig := range forwardedSignals {
		if !signal.Ignored(sig) {
			signal.Notify(caught, sig)
		}
	}
	// Linux's parent-death signal is sent when the thread that started the
	// child exits: keep this goroutine on its thread to the end.
	runtime.LockOSThread()
	cmd := &exec.Cmd{
		Path:        args[0],
		Args:        args[1:],
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		SysProcAttr: cmdProcAttr(),
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "etcdlock: cannot run %s: %v\n", args[0], err)
		if errors.Is(err, fs.ErrNotExist) {
			return exitNotFound
		}
		return exitCannotExec
	}
	// CMD is in the group, and the guard catches what reaches the group:
	// etcdlock may send the signals it held back.
	_, _ = ready.Write([]byte{1})
	// The lifeline: EOF means etcdlock is gone. This goroutine ends with
	// the process.
	go func() {
		_, _ = io.Copy(io.Discard, lifeline)
		_ = syscall.Kill(0, syscall.SIGKILL) // the guard's whole process group, itself included
	}()
	_ = cmd.Wait()
	// Report CMD's status, then kill what CMD left running in the group,
	// the guard included: nothing of CMD's may outlive it unwatched, and
	// outside Linux etcdlock could not do it safely once the guard is
	// reaped (the group's ID may then be reused).
	status := exitStatus(cmd.ProcessState)
	if _, err := ready.Write([]byte{byte(status)}); err == nil {
		_ = syscall.Kill(0, syscall.SIGKILL)
	}
	return status
}
