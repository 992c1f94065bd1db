package procnemesis

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	_ "modernc.org/sqlite" // the SQL fence's database

	"github.com/etcdlock/etcdlock/fencing/sqlfence"
	"github.com/etcdlock/etcdlock/internal/nemesis"
	"github.com/etcdlock/etcdlock/lock"
)

// Config configures Run. The zero Config is a short run with defaults.
type Config struct {
	// Duration is how long the faults run (default 60 s), after a
	// fault-free warm-up of Warmup (default 5 s).
	Duration, Warmup time.Duration
	// Shards is the number of worker locks (default 16), each contended
	// by WorkersPerShard worker processes (default 3, at least 2).
	Shards, WorkersPerShard int
	// Runs is the number of `etcdlock run` loops (default 2).
	Runs int
	// TTL is every holder's lease TTL, whole seconds (default 2 s).
	TTL time.Duration
	// Seed drives the nemeses' choices (0: from the clock).
	Seed int64
	// Dir, if set, holds the run's binaries, data and histories and is
	// kept; else a temporary directory is made and removed.
	Dir string
	// Log, if set, receives a line per fault.
	Log io.Writer
	// Bug, if set, is the name of a planted bug (internal/bugs, e.g.
	// "LeaseIDToken") that every worker runs with: the binaries are
	// built with -tags etcdlock_bugs, and the run must find violations.
	Bug string
	// Trace keeps what a violation needs to be explained, in the run's
	// directory, whatever the outcome: the members' logs at info level,
	// every worker's library log with each lease renewal (sent, answered,
	// member, raft term), and the watcher's events (watch.jsonl).
	Trace bool

	// bin, if set, holds the binaries already built (for Bug's build):
	// tests that run the suite several times build them once.
	bin string
	// lingerDelay, if set, is how late the slow-holder fault makes a
	// lingering holder's answers, in place of 35% of TTL: how late a
	// holder that times its lease from receipt (the planted
	// ReceiveTimeDeadline) learns of its end.
	lingerDelay time.Duration
	// holderFaults, if set, are the holder nemesis's faults, in turn, in
	// place of its usual rotation.
	holderFaults []string
}

func (c Config) withDefaults() (Config, error) {
	if c.Duration == 0 {
		c.Duration = 60 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 5 * time.Second
	}
	if c.Shards == 0 {
		c.Shards = 16
	}
	if c.WorkersPerShard == 0 {
		c.WorkersPerShard = 3
	}
	if c.Runs == 0 {
		c.Runs = 2
	}
	if c.TTL == 0 {
		c.TTL = 2 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano()
	}
	switch {
	case c.Duration < 0 || c.Warmup < 0 || c.Shards < 0 || c.Runs < 0:
		return c, fmt.Errorf("%w: negative duration or count", ErrConfig)
	case c.WorkersPerShard < 2:
		return c, fmt.Errorf("%w: a shard needs 2 workers, so that a frozen one's lock passes on", ErrConfig)
	case c.TTL < time.Second || c.TTL%time.Second != 0:
		return c, fmt.Errorf("%w: TTL %v is not a whole number of seconds", ErrConfig, c.TTL)
	}
	return c, nil
}

// ErrConfig is returned by Run for a Config it cannot run.
var ErrConfig = errors.New("procnemesis: bad config")

// namespace is the etcdlock namespace of every lock of a run; data is the
// prefix of its counters in etcd.
const (
	namespace = "procnemesis/"
	data      = "procnemesis-data/"
)

// suite is one run.
type suite struct {
	cfg     Config
	dir     string
	bin     string
	start   time.Time
	startNs int64
	ps      *procs
	c       *cluster
	db      *sql.DB
	fence   *sqlfence.Fence
	dsn     string
	w       *nemesis.Watcher
	log     io.Writer

	shards []shard
	runLk  shard // the `etcdlock run` lock and counters

	// quiet is held by the member nemesis while a member fault is in
	// progress, and read-held by a slow-holder fault while it cuts its
	// holder: slow holders of different locks overlap, each on its own
	// links, but none with a member fault.
	quiet sync.RWMutex

	hmu     sync.Mutex
	holders []*holder // every holder process ever started
	faults  []FaultRecord
	outlive []string // children of killed runs that outlived them
	notes   []string
}

// shard is one lock and its three counters.
type shard struct {
	name   string // lock name, and SQL resource and counter row
	prefix string // the lock's key prefix
	rw     bool   // an RWMutex, else a Mutex (etcdlock run's)
	reg    string // fenced etcd counter key
	ctl    string // unfenced control key
}

// now returns the time since the run's start on the wall clock, as the
// holders record it.
func (s *suite) now() int64 { return time.Now().UnixNano() - s.startNs }

func (s *suite) logf(format string, args ...any) {
	if s.log != nil {
		fmt.Fprintf(s.log, "%7.1fs ", float64(s.now())/1e9)
		fmt.Fprintf(s.log, format+"\n", args...)
	}
}

// Run builds the binaries, starts the cluster and the holders, runs the
// nemeses for cfg.Duration, stops everything and checks the histories.
// It blocks until then; ctx's end cuts the faults short (the report says
// so). Every process it started is killed and reaped before it returns.
// It returns ErrConfig for a bad cfg, and another error only when the run
// could not be made (a build, the cluster's start); violations are in the
// Report. Runs may go on concurrently: each has its own directory and
// ports.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, err
	}
	s := &suite{cfg: cfg, ps: newProcs(), log: cfg.Log}
	if s.dir = cfg.Dir; s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "etcdlock-procnemesis-"); err != nil {
			return nil, err
		}
		defer func() { // after every process is gone (deferred below)
			if rep != nil && (rep.Violations > 0 || !rep.Valid || cfg.Trace) && cfg.Bug == "" {
				// Keep the histories and logs to look into; not the data.
				logs, _ := filepath.Glob(filepath.Join(s.dir, "data", "*.log"))
				for _, l := range logs {
					_ = os.Rename(l, filepath.Join(s.dir, filepath.Base(l)))
				}
				_ = os.RemoveAll(filepath.Join(s.dir, "data"))
				_ = os.RemoveAll(filepath.Join(s.dir, "bin")) // not cfg.bin: not the run's
				rep.OutDir = s.dir
				if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
					_ = os.WriteFile(filepath.Join(s.dir, "report.json"), b, 0o644)
				}
				return
			}
			_ = os.RemoveAll(s.dir)
		}()
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	s.bin = filepath.Join(s.dir, "bin")
	for _, d := range []string{"data", "hist"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	buildStart := time.Now()
	if cfg.bin != "" {
		s.bin = cfg.bin
	} else if err := build(ctx, s.bin, cfg.Bug != ""); err != nil {
		return nil, err
	}
	s.start = time.Now()
	s.startNs = s.start.UnixNano()
	s.logf("built the binaries in %v", time.Since(buildStart).Round(time.Millisecond))
	defer func() {
		s.ps.closeAll()
		s.hmu.Lock()
		for _, h := range s.holders {
			closeLinks(h.links) // the workers are gone; closing twice is harmless
		}
		s.hmu.Unlock()
		// Every process of the run names a binary of its own in its command
		// line (a job's shell names lockworker).
		if left := leftoversAfterKill(s.bin + string(filepath.Separator)); len(left) > 0 && rep != nil {
			rep.Leftovers = left
			rep.Violations += len(left)
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, memberStartTimeout)
	logLevel := "error"
	if cfg.Trace {
		logLevel = "info"
	}
	s.c, err = startCluster(sctx, s.ps, filepath.Join(s.bin, "etcdserver"), filepath.Join(s.dir, "data"), 3, logLevel)
	cancel()
	if err != nil {
		return nil, err
	}
	defer s.c.close()
	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	defer s.db.Close()
	defer func() {
		if s.w != nil {
			s.w.Stop()
			if cfg.Trace {
				s.dumpEvents()
			}
		}
	}()
	return s.run(ctx)
}

// build builds the suite's binaries into dir, without the race detector,
// and with the planted bugs compiled in if bugs.
func build(ctx context.Context, dir string, bugs bool) error {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return fmt.Errorf("procnemesis: finding the module: %w", err)
	}
	root := strings.TrimSpace(string(out))
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if bugs {
		args = append(args, "-tags", "etcdlock_bugs")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./internal/cmd/etcdserver", "./internal/cmd/lockworker", "./cmd/etcdlock")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("procnemesis: building the binaries: %w\n%s", err, out)
	}
	return nil
}

// setup makes the SQL database, the counters and the watcher.
func (s *suite) setup(ctx context.Context) error {
	s.dsn = "file:" + filepath.Join(s.dir, "fence.db") +
		"?_txlock=immediate&_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	var err error
	if s.db, err = sql.Open("sqlite", s.dsn); err != nil {
		return err
	}
	if s.fence, err = sqlfence.New(sqlfence.SQLite, ""); err != nil {
		return err
	}
	if err := s.fence.CreateTable(ctx, s.db); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, "CREATE TABLE counter (name TEXT PRIMARY KEY, n BIGINT NOT NULL)"); err != nil {
		return err
	}
	mk := func(name string, rw bool) (shard, error) {
		sh := shard{name: name, rw: rw, reg: data + name + "/reg", ctl: data + name + "/ctl"}
		if rw {
			m, err := lock.NewRWMutex(s.c.cli, name, lock.WithNamespace(namespace))
			if err != nil {
				return sh, err
			}
			sh.prefix = m.Prefix()
			_ = m.Close()
		} else {
			m, err := lock.NewMutex(s.c.cli, name, lock.WithNamespace(namespace))
			if err != nil {
				return sh, err
			}
			sh.prefix = m.Prefix()
			_ = m.Close()
		}
		_, err := s.db.ExecContext(ctx, "INSERT INTO counter (name, n) VALUES (?, 0)", name)
		return sh, err
	}
	for i := range s.cfg.Shards {
		sh, err := mk(fmt.Sprintf("m%d", i), false)
		if err != nil {
			return err
		}
		s.shards = append(s.shards, sh)
	}
	if s.runLk, err = mk("job", false); err != nil { // etcdlock run NAME is lock.NewMutex(NAME)
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := s.c.cli.Get(gctx, "\x00", clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	s.w = nemesis.StartWatcher(s.c.cli, namespace, resp.Header.Revision+1, s.start)
	return nil
}

// dumpEvents writes the watcher's events to watch.jsonl in the run's
// directory (Config.Trace).
func (s *suite) dumpEvents() {
	f, err := os.Create(filepath.Join(s.dir, "watch.jsonl"))
	if err != nil {
		return
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, e := range s.w.Events() {
		_ = enc.Encode(e)
	}
}
