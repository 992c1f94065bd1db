package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
)

// The end-to-end tests run etcdlock as separate processes against one
// embedded etcd server that listens on TCP. The etcdlock they run is this
// test binary (TestMain runs main when $ETCDLOCK_TEST_AS_MAIN is 1): it
// needs no go toolchain and no second build, and a data race in a command
// shows up in the process's stderr and exit status (66).

// asMainEnv makes the test binary run as etcdlock.
const asMainEnv = "ETCDLOCK_TEST_AS_MAIN"

// e2e is the state the end-to-end tests share.
var e2e struct {
	mu  sync.Mutex
	srv *integration.Server
	err error
}

// e2eServer returns the shared server, starting it on first use. It listens
// on a free TCP port of 127.0.0.1, without fsync.
func e2eServer(t *testing.T) *integration.Server {
	t.Helper()
	e2e.mu.Lock()
	defer e2e.mu.Unlock()
	if e2e.srv == nil && e2e.err == nil {
		e2e.srv, e2e.err = integration.StartServer(
			integration.WithClientURL("http://127.0.0.1:0"), integration.WithoutFsync())
	}
	if e2e.err != nil {
		t.Fatalf("starting etcd: %v", e2e.err)
	}
	return e2e.srv
}

// closeE2E closes the shared server, if it was started.
func closeE2E() error {
	e2e.mu.Lock()
	defer e2e.mu.Unlock()
	if e2e.srv == nil {
		return nil
	}
	err := e2e.srv.Close()
	e2e.srv = nil
	return err
}

// needUnix skips tests that need Unix processes, signals and /proc.
func needUnix(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("end-to-end tests need Linux (process groups, /proc)")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
}

// e2eEnv is the environment of one test's etcdlock processes.
type e2eEnv struct {
	t    *testing.T
	srv  *integration.Server
	cli  *clientv3.Client
	dir  string // the test's temporary directory
	log  string // the file the children append their events to
	ns   string // the test's key namespace
	exe  string // the test binary
	base []string
}

// newE2E sets up a test: the shared server, a client, a namespace of its
// own and an event log for the children.
func newE2E(t *testing.T) *e2eEnv {
	t.Helper()
	needUnix(t)
	return newE2EOn(t, e2eServer(t))
}

// newE2EOn is newE2E on srv; env is added to the children's environment.
func newE2EOn(t *testing.T, srv *integration.Server, env ...string) *e2eEnv {
	t.Helper()
	needUnix(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &e2eEnv{
		t:   t,
		srv: srv,
		cli: srv.Client(t),
		dir: dir,
		log: filepath.Join(dir, "events"),
		ns:  integration.Namespace(t),
		exe: exe,
	}
	e.base = append(os.Environ(),
		asMainEnv+"=1",
		// A race-enabled binary sleeps 1s at exit by default, for other
		// goroutines to report: 2s for every run (etcdlock and its guard).
		"GORACE=atexit_sleep_ms=0",
		"ETCDLOCK_ENDPOINTS="+srv.Endpoint(),
		"ETCDLOCK_NAMESPACE="+e.ns,
		"LOG="+e.log,
		"GATE="+filepath.Join(dir, "gate"),
	)
	e.base = append(e.base, env...)
	if err := os.WriteFile(e.log, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// proc is one etcdlock process.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout string // file
	stderr string // file
	done   chan struct{}
	code   int
}

var procSeq sync.Mutex
var procN int

// start starts etcdlock with args; tag is in its children's $TAG. The
// process is killed, if still running, and waited for at cleanup.
func (e *e2eEnv) start(tag string, args ...string) *proc {
	e.t.Helper()
	procSeq.Lock()
	procN++
	n := procN
	procSeq.Unlock()
	p := &proc{
		t:      e.t,
		name:   fmt.Sprintf("%s(etcdlock %s)", tag, strings.Join(args, " ")),
		stdout: filepath.Join(e.dir, fmt.Sprintf("%d-%s.out", n, tag)),
		stderr: filepath.Join(e.dir, fmt.Sprintf("%d-%s.err", n, tag)),
		done:   make(chan struct{}),
	}
	outF, err := os.Create(p.stdout)
	if err != nil {
		e.t.Fatal(err)
	}
	errF, err := os.Create(p.stderr)
	if err != nil {
		e.t.Fatal(err)
	}
	p.cmd = exec.Command(e.exe, args...)
	p.cmd.Env = append(append([]string(nil), e.base...), "TAG="+tag)
	p.cmd.Stdout, p.cmd.Stderr = outF, errF
	err = p.cmd.Start()
	outF.Close()
	errF.Close()
	if err != nil {
		e.t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() {
		defer close(p.done)
		err := p.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
			p.code = 0
		case errors.As(err, &ee):
			p.code = exitStatus(ee.ProcessState)
		default:
			p.code = -1
		}
	}()
	e.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits up to d for the process to exit and returns its status.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		p.t.Fatalf("%s still running after %v; stderr:\n%s", p.name, d, p.errText())
		return -1
	}
}

// expect waits for the process and fails the test unless it exited with
// code.
func (p *proc) expect(code int, d time.Duration) {
	p.t.Helper()
	if got := p.wait(d); got != code {
		p.t.Errorf("%s exited %d, want %d; stderr:\n%s", p.name, got, code, p.errText())
	}
}

// signal sends sig to the etcdlock process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling %s: %v", p.name, err)
	}
}

func (p *proc) errText() string {
	b, _ := os.ReadFile(p.stderr)
	return string(b)
}

func (p *proc) outText() string {
	b, _ := os.ReadFile(p.stdout)
	return string(b)
}

// event is one line of the event log: "<kind> <tag> <pid> [<more>]".
type event struct {
	kind, tag string
	pid       int
	more      string
}

// events reads the event log.
func (e *e2eEnv) events() []event {
	e.t.Helper()
	b, err := os.ReadFile(e.log)
	if err != nil {
		e.t.Fatal(err)
	}
	var evs []event
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, " ", 4)
		if len(f) < 3 {
			e.t.Fatalf("bad event line %q", line)
		}
		pid, err := strconv.Atoi(f[2])
		if err != nil {
			e.t.Fatalf("bad event line %q", line)
		}
		ev := event{kind: f[0], tag: f[1], pid: pid}
		if len(f) == 4 {
			ev.more = f[3]
		}
		evs = append(evs, ev)
	}
	return evs
}

// count returns the number of events of kind.
func count(evs []event, kind string) int {
	n := 0
	for _, ev := range evs {
		if ev.kind == kind {
			n++
		}
	}
	return n
}

// waitFor polls cond every 10ms for up to d, failing the test with what if
// it never holds. It polls because what the tests wait for here tells no
// one: lines the children's shells append to the event log, a process that
// is not ours dying (seen in /proc only), a command's output file. Keys in
// etcd are waited for with a watch (waitKeys).
func (e *e2eEnv) waitFor(d time.Duration, what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("waited %v for %s; events:\n%s", d, what, e.eventText())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEvents waits until the log has at least n events of kind.
func (e *e2eEnv) waitEvents(d time.Duration, kind string, n int) []event {
	e.t.Helper()
	var evs []event
	e.waitFor(d, fmt.Sprintf("%d %q events", n, kind), func() bool {
		evs = e.events()
		return count(evs, kind) >= n
	})
	return evs
}

func (e *e2eEnv) eventText() string {
	b, _ := os.ReadFile(e.log)
	return string(b)
}

// keys returns the number of keys under the test's namespace plus rest.
func (e *e2eEnv) keys(rest string) int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.ns+rest, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Count
}

// waitKeys waits, watching, until there are exactly n keys under the
// namespace plus rest, failing the test if that takes more than d.
func (e *e2eEnv) waitKeys(d time.Duration, rest string, n int64) {
	e.t.Helper()
	integration.WaitKeyCount(e.t, e.cli, e.ns+rest, n, d)
}

// requireEmpty fails the test if any key is left under its namespace.
func (e *e2eEnv) requireEmpty() {
	e.t.Helper()
	integration.RequireEmpty(e.t, e.cli, e.ns)
}

// openGate lets children waiting on $GATE go on.
func (e *e2eEnv) openGate() {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, "gate"), nil, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// alive reports whether pid is a process that has not exited (a zombie
// has).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) state ...": the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// Shell snippets for the children. Each appends events to $LOG as
// "<kind> $TAG $$ [...]".
const (
	// shStart logs the start, with the fencing token and the lease.
	shStart = `echo "start $TAG $$ $ETCDLOCK_TOKEN $ETCDLOCK_LEASE" >> "$LOG"; `
	// shEnd logs the end.
	shEnd = `echo "end $TAG $$" >> "$LOG"; `
	// shGate waits until the test opens the gate.
	shGate = `while [ ! -e "$GATE" ]; do sleep 0.01; done; `
	// shForever loops until killed.
	shForever = `while :; do sleep 0.02; done`
	// shCheckOthers logs "overlap $TAG $$ <pid>" for every process that
	// logged a start or bg event before this one and is still alive: run
	// first thing in a child, it catches a predecessor still running.
	shCheckOthers = `for p in $(awk '$1 == "start" || $1 == "bg" {print $3}' "$LOG"); do ` +
		`s=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -c1); ` +
		`if [ -n "$s" ] && [ "$s" != Z ]; then echo "overlap $TAG $$ $p" >> "$LOG"; fi; done; `
)
