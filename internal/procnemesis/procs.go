package procnemesis

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procs owns every child process of a run: each is started in a process
// group of its own with a parent-death signal, waited for by a goroutine
// of procs, and killed (its whole group) and reaped by closeAll.
type procs struct {
	wg sync.WaitGroup
	mu sync.Mutex
	// live are the processes not yet reaped.
	live map[*proc]struct{}
	// extra are pids of grandchildren (jobs under `etcdlock run`) that
	// closeAll kills too, should they have outlived their parents.
	extra map[int]struct{}
}

// proc is one child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once reaped
	err  error         // Wait's, once done is closed
	// exitNs is when it was reaped (Unix ns), once done is closed.
	exitNs int64
}

func newProcs() *procs {
	return &procs{live: make(map[*proc]struct{}), extra: make(map[int]struct{})}
}

// start starts bin with args as name; its stdout goes to stdout (if not
// nil) and its stderr to the file logPath.
func (ps *procs) start(name string, stdout io.Writer, logPath string, bin string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = stdout
	if stdout == nil {
		cmd.Stdout = logf
	}
	cmd.Stderr = logf
	// Its own group, so that a kill reaches what it started; and a
	// SIGKILL should this process die without closing procs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("procnemesis: starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	ps.mu.Lock()
	ps.live[p] = struct{}{}
	ps.mu.Unlock()
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		p.err = cmd.Wait()
		p.exitNs = time.Now().UnixNano()
		logf.Close()
		ps.mu.Lock()
		delete(ps.live, p)
		ps.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// pid returns the process's id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// signal sends sig to the process alone (not its group).
func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(p.pid(), sig)
	}
}

// killGroup sends SIGKILL to the process's group, which it leads; a
// stopped process dies of SIGKILL too.
func (p *proc) killGroup() { _ = syscall.Kill(-p.pid(), syscall.SIGKILL) }

// exited reports whether the process has been reaped.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to exit and reports whether it did.
func (p *proc) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// stop asks the process to stop with SIGTERM (and SIGCONT, should it be
// stopped), waits up to grace, then kills its group and waits for it.
func (p *proc) stop(grace time.Duration) {
	p.signal(syscall.SIGTERM)
	p.signal(syscall.SIGCONT)
	if !p.wait(grace) {
		p.killGroup()
		<-p.done
	}
}

// adopt records the pid of a grandchild for closeAll.
func (ps *procs) adopt(pid int) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.extra[pid] = struct{}{}
}

// closeAll kills every live child's group and every adopted grandchild,
// and waits until every child is reaped.
func (ps *procs) closeAll() {
	ps.mu.Lock()
	for p := range ps.live {
		p.killGroup()
	}
	for pid := range ps.extra {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	ps.mu.Unlock()
	ps.wg.Wait()
}

// alive reports whether pid is a process that has not exited (a zombie
// has exited).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	return state(b) != 'Z' && state(b) != 'X'
}

// stopped reports whether pid is stopped by a signal.
func stopped(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && state(b) == 'T'
}

// state returns the state field of a /proc/<pid>/stat line.
func state(stat []byte) byte {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0
	}
	return s[i+2]
}

// leftovers scans /proc for live processes whose command line names
// something under dir (the run's binaries): a run leaves none.
func leftovers(dir string) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []string
	mine := ancestors()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || mine[pid] {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cl), dir) || !alive(pid) {
			continue
		}
		out = append(out, fmt.Sprintf("%d: %s", pid, strings.ReplaceAll(strings.TrimRight(string(cl), "\x00"), "\x00", " ")))
	}
	return out
}

// leftoversAfterKill is leftovers once the processes just SIGKILLed have
// died: a signal to a process group is delivered to each member on its
// own, and a child the shell forked a moment before may still be there
// when the group's leader has been reaped. It looks again for up to 2 s
// while any is left; one alive after that was not killed.
func leftoversAfterKill(dir string) []string {
	left := leftovers(dir)
	for end := time.Now().Add(2 * time.Second); len(left) > 0 && time.Now().Before(end); left = leftovers(dir) {
		time.Sleep(20 * time.Millisecond)
	}
	return left
}

// ancestors returns this process and its ancestors: their command lines
// may name the run's directory (a -dir flag).
func ancestors() map[int]bool {
	out := make(map[int]bool)
	for pid := os.Getpid(); pid > 1 && !out[pid]; {
		out[pid] = true
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			break
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			break
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return out
}

// errNotReady is returned when a member did not become ready in time.
var errNotReady = errors.New("procnemesis: member not ready in time")
