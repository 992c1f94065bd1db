package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/lock"
)

// minGrace is the least default grace period between SIGTERM and SIGKILL.
const minGrace = 100 * time.Millisecond

// releaseTimeout bounds the release of a hold or term after CMD exits.
const releaseTimeout = 5 * time.Second

// giveUpTimeout bounds the cleanup after a hold or term was lost, or a
// release failed: a delete or revoke that etcd answers takes milliseconds,
// and what it does not answer within this is left to the lease's expiry,
// within the TTL. Waiting longer would only delay the exit.
const giveUpTimeout = time.Second

// closeWithin calls closeFn (a lock's or an election's Close) and, if it
// has not returned within d, aborts every request of the connection's
// client (see aborter), so that it returns at once. It waits for closeFn
// either way and returns its error.
func closeWithin(d time.Duration, conn *cmdline.Conn, closeFn func() error) error {
	done := make(chan error, 1)
	go func() { done <- closeFn() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		conn.Abort()
		return <-done
	}
}

// timing is the lease TTL of run and elect, the safety margin their holds
// keep, and the grace period CMD gets between SIGTERM and SIGKILL.
type timing struct {
	ttl, margin, grace time.Duration
}

// graceHelp explains --grace, for run's and elect's help.
const graceHelp = `
How CMD is stopped when the hold is lost. A hold (or term) is presumed lost
at the first sign: its key deleted, its lease gone, or its conservative
deadline passed. That deadline is the send time of the last lease renewal
etcd acknowledged, plus the TTL, minus a safety margin of a fifth of the
TTL. etcd cannot expire the lease before the send time plus the TTL, that
is, before the deadline plus the margin. So at the loss etcdlock sends
SIGTERM to CMD's process group, and SIGKILL --grace later, with --grace less
than the margin: CMD is dead before etcd can give the lock (or leadership)
to anyone else. The default grace is half the margin, at least 100ms: 1s
for the default --ttl 10s (margin 2s). --grace 0 sends SIGKILL at once.

That holds while etcdlock runs. If etcdlock itself dies, even by SIGKILL,
CMD's process group is killed at once (CMD runs under a small guard process
that watches etcdlock; on Linux CMD also gets a parent-death signal). If
etcdlock is stopped (SIGSTOP, a frozen VM), nothing can stop CMD in time:
pass $ETCDLOCK_TOKEN to whatever CMD writes to and have it refuse tokens
lower than the highest it has seen. When someone deletes the key or revokes
the lease by hand, etcd hands the lock on at once: CMD gets SIGTERM within
milliseconds, but may still be running when the next holder starts.

CMD runs in a process group of its own, with stdin from /dev/null when
etcdlock's stdin is a terminal. etcdlock forwards SIGINT, SIGTERM, SIGHUP,
SIGQUIT, SIGUSR1 and SIGUSR2 to that group, and ignores SIGTSTP (Ctrl-Z),
which would stop etcdlock while CMD ran on. When CMD exits, whatever it
left running in its process group is killed, then the hold is released.`

// newTiming validates --ttl and --grace.
func newTiming(ttl time.Duration, grace optDuration) (timing, error) {
	if ttl < time.Second || ttl%time.Second != 0 {
		return timing{}, cmdline.UsageError("--ttl must be a whole number of seconds, at least 1s, not %v", ttl)
	}
	t := timing{ttl: ttl, margin: ttl / 5}
	t.grace = max(t.margin/2, minGrace)
	if grace.set {
		switch {
		case grace.d < 0:
			return timing{}, cmdline.UsageError("--grace must not be negative, not %v", grace.d)
		case grace.d >= t.margin:
			return timing{}, cmdline.UsageError("--grace %v is not less than the safety margin %v (a fifth of --ttl %v): CMD could outlive the lease", grace.d, t.margin, ttl)
		}
		t.grace = grace.d
	}
	return t, nil
}

// holding is what supervise needs of a *lock.Hold or an *election.Term.
type holding interface {
	Done() <-chan struct{}
	Err() error
}

// outcome is how CMD ended.
type outcome struct {
	status int       // CMD's exit status, 128+N if signal N killed it
	lost   error     // why the hold ended while CMD ran, if it did
	killed bool      // SIGKILL was sent because of the loss
	stop   os.Signal // the first stop request (SIGINT, SIGTERM, SIGHUP, SIGQUIT) forwarded, if any
}

// supervise waits for CMD to exit, forwarding the signals that arrive on
// sigs. If the hold ends first, it sends CMD's process group SIGTERM at
// once and SIGKILL grace later (at once for a zero grace).
func supervise(c *child, h holding, grace time.Duration, sigs <-chan os.Signal) outcome {
	var (
		o     outcome
		lost  = h.Done()
		killC <-chan time.Time
	)
	for {
		select {
		case <-c.exited:
			o.status = c.finish()
			return o
		case sig := <-sigs:
			c.signal(sig)
			if o.stop == nil && isStop(sig) {
				o.stop = sig
			}
		case <-lost:
			lost = nil
			o.lost = h.Err()
			if grace == 0 {
				c.signal(syscall.SIGKILL)
				o.killed = true
				continue
			}
			c.signal(syscall.SIGTERM)
			t := time.NewTimer(grace)
			defer t.Stop()
			killC = t.C
		case <-killC:
			killC = nil
			c.signal(syscall.SIGKILL)
			o.killed = true
		}
	}
}

// isStop reports whether sig asks etcdlock (and CMD) to stop.
func isStop(sig os.Signal) bool {
	switch sig {
	case syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT:
		return true
	}
	return false
}

// stopped describes how CMD was stopped for a loss.
func (o outcome) stopped(grace time.Duration) string {
	switch {
	case o.killed && grace == 0:
		return "CMD was killed (SIGKILL)"
	case o.killed:
		return fmt.Sprintf("CMD got SIGTERM, and SIGKILL %v later", grace)
	default:
		return "CMD got SIGTERM and exited"
	}
}

// lossReason says why a hold or term was lost.
func lossReason(err error) string {
	switch {
	case errors.Is(err, lock.ErrDeleted), errors.Is(err, election.ErrDeleted):
		return "its key was deleted by another client, or its lease revoked"
	case errors.Is(err, lock.ErrSessionExpired), errors.Is(err, election.ErrSessionExpired):
		return "its lease expired or was revoked"
	case errors.Is(err, lock.ErrDeadline), errors.Is(err, election.ErrDeadline):
		return "no lease renewal was acknowledged in time; etcd may be unreachable"
	case err == nil:
		return "unknown reason"
	default:
		return err.Error()
	}
}

// lookCmd finds CMD's executable as a shell would. It returns a failure
// with exitNotFound or exitCannotExec.
func lookCmd(name string) (string, error) {
	path, err := exec.LookPath(name)
	switch {
	case err == nil:
		return path, nil
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return "", cmdline.Failf(exitNotFound, "CMD %q not found", name)
	case errors.Is(err, exec.ErrDot):
		return "", cmdline.Failf(exitNotFound, "CMD %q found only in the current directory (through $PATH); say ./%s", name, name)
	default:
		return "", cmdline.Failf(exitCannotExec, "CMD %q cannot be executed: %v", name, err)
	}
}

// The variables CMD finds in its environment.
const (
	envName  = "ETCDLOCK_NAME"  // the lock's or election's name
	envKey   = "ETCDLOCK_KEY"   // the hold's or term's etcd key
	envToken = "ETCDLOCK_TOKEN" // the key's create revision: the fencing token
	envLease = "ETCDLOCK_LEASE" // the key's lease ID, in hex as etcdctl shows it
)

// childEnv returns etcdlock's environment with the hold's variables set.
func childEnv(name string, tok fencing.Token, lease clientv3.LeaseID) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		for _, v := range []string{envName, envKey, envToken, envLease} {
			if strings.HasPrefix(kv, v+"=") {
				return true
			}
		}
		return false
	})
	return append(env,
		envName+"="+name,
		envKey+"="+tok.Key,
		envToken+"="+strconv.FormatInt(tok.Revision, 10),
		envLease+"="+leaseHex(lease))
}

// leaseHex formats a lease ID as etcdctl does, and as the key names show
// it: 16 hex digits.
func leaseHex(id clientv3.LeaseID) string { return fmt.Sprintf("%016x", int64(id)) }

// sinceLayout is the time in a holder description.
const sinceLayout = "2006-01-02T15:04:05.000Z07:00"

// holderDesc describes this process in the keys run and elect write:
// "host:pid since <time>", the time the command started, which status
// shows as the key's age.
func holderDesc(start time.Time) string {
	return lock.DefaultHolder() + " since " + start.UTC().Format(sinceLayout)
}

// parseSince returns the time in a holder description made by holderDesc,
// or by anyone who ends a description with " since " and an RFC 3339 time,
// fractional seconds or not.
func parseSince(desc string) (time.Time, bool) {
	i := strings.LastIndex(desc, " since ")
	if i < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, desc[i+len(" since "):])
	return t, err == nil
}

// cmdLog writes one-line messages of a command to stderr: always for
// errors, with --verbose for the rest.
type cmdLog struct {
	w       io.Writer
	name    string
	verbose bool
}

func (l *cmdLog) infof(format string, args ...any) {
	if l.verbose {
		fmt.Fprintf(l.w, "etcdlock %s: %s\n", l.name, fmt.Sprintf(format, args...))
	}
}

func (l *cmdLog) errorf(format string, args ...any) {
	fmt.Fprintf(l.w, "etcdlock %s: %s\n", l.name, cmdline.OneLine(fmt.Sprintf(format, args...)))
}

// exitStatus returns the status of a process that exited: its exit code,
// or 128+N if signal N killed it.
func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return exitRunFailure
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return ps.ExitCode()
}
