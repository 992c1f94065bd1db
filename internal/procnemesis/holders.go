package procnemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/procnemesis/record"
)

// holder is one holder process: a worker, or one `etcdlock run`.
type holder struct {
	name  string
	shard *shard
	run   bool // an `etcdlock run`, whose job writes hist
	hist  string
	proc  *proc
	// links are a worker's connections to etcd: a proxy of the suite in
	// front of each member's client URL, which the slow-holder fault
	// delays and cuts. nil for an `etcdlock run`.
	links []*linkProxy

	// Set by the holder nemesis (under suite.hmu):
	killedAt int64    // when it was seen dead after a SIGKILL, 0 if not killed
	freezes  []frozen // its freezes
	frozen   bool     // frozen now
}

// frozen is one freeze of a worker in its critical section.
type frozen struct {
	Worker string `json:"worker"`
	Key    string `json:"key"`
	Token  int64  `json:"token"`
	From   int64  `json:"from"` // when it stopped itself (its freeze line)
	To     int64  `json:"to"`   // when the suite resumed it
	// NewerAdmitted: by its resumption a newer holder had been admitted
	// by the SQL fence and its key was gone.
	NewerAdmitted bool `json:"newer_admitted"`
}

// workerArgs returns the arguments lockworker needs for sh, after the
// mode.
func (s *suite) workerArgs(sh *shard, endpoints []string, hist string) []string {
	return []string{"-endpoints", strings.Join(endpoints, ","), "-history", hist,
		"-start", strconv.FormatInt(s.startNs, 10), "-sqlite", s.dsn,
		"-reg", sh.reg, "-ctl", sh.ctl, "-sql-resource", sh.name}
}

// startWorker starts a worker process on sh, connected to etcd through
// links of its own.
func (s *suite) startWorker(sh *shard) (*holder, error) {
	var links []*linkProxy
	var eps []string
	for _, m := range s.c.members {
		p, err := startLinkProxy(strings.TrimPrefix(m.clientURL, "http://"))
		if err != nil {
			closeLinks(links)
			return nil, err
		}
		links = append(links, p)
		eps = append(eps, p.endpoint())
	}
	h, err := s.startHolder("w", sh, links, func(hist string) (string, []string) {
		args := []string{"worker", "-lock", sh.name, "-namespace", namespace, "-ttl", s.cfg.TTL.String(),
			"-give-up", (2 * s.cfg.TTL).String()}
		if s.cfg.Bug != "" {
			args = append(args, "-bug", s.cfg.Bug)
		}
		if s.cfg.Trace {
			args = append(args, "-trace")
		}
		return "lockworker", append(args, s.workerArgs(sh, eps, hist)...)
	})
	if err != nil {
		closeLinks(links)
	}
	return h, err
}

// closeLinks closes a worker's links, once its process is gone.
func closeLinks(links []*linkProxy) {
	for _, p := range links {
		p.close()
	}
}

// startRun starts one `etcdlock run` of the run lock, around a shell that
// runs a lockworker job and then exits with its status.
func (s *suite) startRun() (*holder, error) {
	sh := &s.runLk
	return s.startHolder("r", sh, nil, func(hist string) (string, []string) {
		return "etcdlock", append([]string{"run", "--endpoints", strings.Join(s.c.endpoints(), ","),
			"--namespace", namespace, "--ttl", s.cfg.TTL.String(), "--grace", s.runGrace().String(), sh.name, "--",
			"sh", "-c", `"$@"; exit $?`, "sh", filepath.Join(s.bin, "lockworker"), "job"}, s.workerArgs(sh, s.c.endpoints(), hist)...)
	})
}

// runGrace is etcdlock run's --grace: the time its job has between
// SIGTERM and SIGKILL once the hold is lost, under the fifth of the TTL
// that run allows.
func (s *suite) runGrace() time.Duration { return s.cfg.TTL * 3 / 20 }

// logPath is the file of h's standard output and error.
func (h *holder) logPath() string { return strings.TrimSuffix(h.hist, ".jsonl") + ".log" }

// startHolder records a new holder of sh and starts the binary and
// arguments that command returns for its history file. A worker comes
// with its links; an `etcdlock run` has none.
func (s *suite) startHolder(prefix string, sh *shard, links []*linkProxy, command func(hist string) (string, []string)) (*holder, error) {
	s.hmu.Lock()
	h := &holder{name: fmt.Sprintf("%s%d-%s", prefix, len(s.holders), sh.name), shard: sh, run: links == nil, links: links}
	h.hist = filepath.Join(s.dir, "hist", h.name+".jsonl")
	s.holders = append(s.holders, h)
	s.hmu.Unlock()
	bin, args := command(h.hist)
	p, err := s.ps.start(h.name, nil, h.logPath(), filepath.Join(s.bin, bin), args...)
	if err != nil {
		return nil, err
	}
	s.hmu.Lock()
	h.proc = p
	s.hmu.Unlock()
	return h, nil
}

// runLoop starts `etcdlock run`s one after another until stop closes,
// and waits for the last one.
func (s *suite) runLoop(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		h, err := s.startRun()
		if err != nil {
			s.note("starting etcdlock run: %v", err)
			return
		}
		if !h.proc.wait(time.Minute) {
			s.note("%s ran over a minute: killed", h.name)
			h.proc.killGroup()
			<-h.proc.done
		}
	}
}

func (s *suite) note(format string, args ...any) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if len(s.notes) < 50 {
		s.notes = append(s.notes, fmt.Sprintf(format, args...))
	}
}

// jobPIDs returns the pids of the job of run holder h and of the shell
// that runs it, once the job has started, from its history.
func jobPIDs(h *holder) []int {
	lines, _, err := record.Read(h.hist)
	if err != nil {
		return nil
	}
	for _, l := range lines {
		if l.Kind == record.Job {
			return []int{l.PID, l.PPID}
		}
	}
	return nil
}

// holders runs the worker processes of every shard and the run loops
// until stop closes, then stops them all (each within a bounded time).
type holderSet struct {
	s    *suite
	mu   sync.Mutex
	live map[*holder]bool // workers running
	wg   sync.WaitGroup
	stop chan struct{}
}

func (s *suite) startHolders() (*holderSet, error) {
	hs := &holderSet{s: s, live: make(map[*holder]bool), stop: make(chan struct{})}
	for i := range s.shards {
		for range s.cfg.WorkersPerShard {
			h, err := s.startWorker(&s.shards[i])
			if err != nil {
				hs.close()
				return nil, err
			}
			hs.live[h] = true
		}
	}
	for range s.cfg.Runs {
		hs.wg.Add(1)
		go func() {
			defer hs.wg.Done()
			s.runLoop(hs.stop)
		}()
	}
	return hs, nil
}

// pick returns a random live worker for which ok holds, or nil.
func (hs *holderSet) pick(rng *rand.Rand, ok func(*holder) bool) *holder {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var c []*holder
	for h := range hs.live {
		if ok(h) {
			c = append(c, h)
		}
	}
	if len(c) == 0 {
		return nil
	}
	// Map order is random but not seeded: sort for the seed's sake.
	slices.SortFunc(c, func(a, b *holder) int { return strings.Compare(a.name, b.name) })
	return c[rng.IntN(len(c))]
}

// replace records that h died, closes its links and starts a worker in
// its place.
func (hs *holderSet) replace(h *holder) error {
	closeLinks(h.links)
	nh, err := hs.s.startWorker(h.shard)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	delete(hs.live, h)
	if err == nil {
		hs.live[nh] = true
	}
	return err
}

// close stops the run loops (each run finishes its job) and the workers.
func (hs *holderSet) close() {
	close(hs.stop)
	hs.mu.Lock()
	ws := make([]*holder, 0, len(hs.live))
	for h := range hs.live {
		ws = append(ws, h)
	}
	hs.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.proc.stop(15 * time.Second)
			closeLinks(h.links)
		}()
	}
	wg.Wait()
	hs.wg.Wait()
}

// freeze asks worker h to stop itself at its next pause point, holds it
// stopped for at least d and until a newer holder of its lock has been
// admitted by the SQL fence and its key is gone (at most wait more), and
// resumes it. It returns false if h did not reach its pause point in time.
func (s *suite) freeze(ctx context.Context, h *holder, d, wait time.Duration) (frozen, bool) {
	ctx = context.WithoutCancel(ctx) // the end of the faults does not cut a freeze short

	h.proc.signal(syscall.SIGUSR1)
	deadline := time.Now().Add(10 * time.Second)
	for !stopped(h.proc.pid()) {
		if time.Now().After(deadline) || h.proc.exited() {
			h.proc.signal(syscall.SIGUSR2) // withdraw the request
			time.Sleep(100 * time.Millisecond)
			h.proc.signal(syscall.SIGCONT) // in case it stopped just then
			return frozen{}, false
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.hmu.Lock()
	h.frozen = true
	s.hmu.Unlock()
	f := frozen{Worker: h.name}
	lines, _, _ := record.Read(h.hist)
	for _, l := range lines {
		if l.Kind == record.Freeze {
			f.Key, f.Token, f.From = l.Key, l.Token, l.At
		}
	}
	sleepCtx(ctx, d)
	end := time.Now().Add(wait)
	for time.Now().Before(end) {
		if s.newerAdmitted(ctx, h.shard, f) {
			f.NewerAdmitted = true
			break
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	f.To = s.now()
	h.proc.signal(syscall.SIGCONT)
	s.hmu.Lock()
	h.frozen = false
	h.freezes = append(h.freezes, f)
	s.hmu.Unlock()
	return f, true
}

// newerAdmitted reports whether f's key is gone and the SQL fence of its
// shard has admitted a newer token.
func (s *suite) newerAdmitted(ctx context.Context, sh *shard, f frozen) bool {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := s.c.cli.Get(qctx, f.Key, clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		return false
	}
	tok, err := s.fence.Highest(qctx, s.db, sh.name)
	return err == nil && tok.Revision > f.Token
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
