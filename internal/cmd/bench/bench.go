// Command bench measures the throughput and latency of etcdlock's
// primitives against etcd's own recipes: a maintainer's tool, not part of
// what users install.
//
// Usage:
//
//	go run ./internal/cmd/bench [flags]
//
// Run it with --help for the cells it measures and its flags.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc"

	"github.com/etcdlock/etcdlock/integration/embedded"
	"github.com/etcdlock/etcdlock/internal/cmdline"
)

func main() { cmdline.Main(benchCmd()) }

// benchCmd returns the command.
func benchCmd() *cmdline.Command {
	return &cmdline.Command{
		Prog:    "bench",
		Summary: "throughput and latency of etcdlock's primitives against etcd's own recipes",
		Usage:   "go run ./internal/cmd/bench [flags]",
		Help:    benchHelp,
		Setup:   setupBench,
	}
}

// benchHelp is the command's description.
const benchHelp = `
Bench starts one embedded etcd server (one member, fsync on unless
--fsync=false; or see --endpoints below) and measures, in this process,
cell by cell:

	put          serial raw Puts by one client: the floor.
	uncontended  Lock+Unlock cycles by one client; ops/s, p50 and p99 of
	             the cycle, and the ratio of its time to two raw Puts. The
	             txn row sends the two requests of an etcdlock cycle bare,
	             with no library: the floor for their shape.
	contended    N contenders on one lock, each with its own client and its
	             own lock (for concurrency.Mutex, its own session), looping
	             Lock, an empty critical section, Unlock; ops/s are critical
	             sections per second, p50 and p99 the wait from calling Lock
	             to holding the lock; the ratio is to concurrency.Mutex's
	             critical sections per second.
	floor        (contended) the bare requests of a contended lock.Mutex
	             handoff, sent by as many contenders with no library: the
	             enqueue Txn, a watch on the key ahead kept from wait to
	             wait, one read after its delete, the release Txn. The
	             floor-noread row takes the delete as the grant, with no
	             read. The contended rows of N contenders run in turn
	             with a serial Put by one client (put serial N) and give
	             their rate over its rate (/put) and over the floor's
	             (/floor).
	readers      lock.RWMutex: 8 readers and 1 writer looping, every hold
	             counted, against lock.Mutex with the same 9 contenders.
	writers      lock.RWMutex and etcd's recipes.RWMutex with 8 writers.
	contended    (etcdlock-sem) lock.Semaphore of 4 permits, 16 contenders
	             taking 1 each, against lock.Mutex with the same 16.
	parallel     beside the readers and the semaphore: as many clients,
	             each putting its own key in a loop; a read hold or a permit
	             is two writes, so half this rate bounds those rows.
	floor-sem    beside the semaphore and the readers (floor-rw): the bare
	floor-rw     requests of a FIFO queue of permits, no library: the
	             enqueue Txn reading what is ahead, watches kept from wait
	             to wait, one read after the delete that may admit, the
	             release Txn; the -noread rows decide by the events alone.
	             Their ratio is to the mutex with as many contenders; the
	             etcdlock rows give their rate over the floor's (/floor).
	handoff      election: a leader resigns and the other candidate takes
	             over, against etcd's concurrency.Election.

With --scale, bench runs the scale rows instead (long: minutes): put
serial; lock.Mutex with 32 and 1000 contenders; lock.RWMutex with 1 writer
and 8, 64 and 256 readers, and with 256 idle readers; lock.Semaphore of 4
permits with 16, 64 and 256 clients; and 10,000 lock.Mutex holds on one
session (--contenders gives the mutex rows' counts instead). Beside the
usual columns they give the watch events the server sent per release (its
own etcd_debugging_mvcc_events_total), the writer's wait for the readers
rows, and heap and goroutines per live hold for the holds row.

Cells that are compared run one after the other, in alternating order,
--rounds times each, so that they share the machine's mood; with more than
one round each figure is the median over the rounds.
The put and uncontended cells run interleaved: one operation of each in
turn, until each has had --duration of its own time, so that a drift in
the disk's latency hits them all alike.
Each cell uses keys of its own, and leaves none behind.
Beside the speeds, each row gives the CPU the whole process (server,
clients, library) used over its measured time: as cores kept busy, and per
operation. On a small machine a cell that keeps every core busy is bound by
CPU, not by the disk or the protocol.

With --endpoints, bench runs against that etcd instead of starting one:
your own cluster, with the server on other machines as in production.
Its cells write keys under --namespace (in a prefix of their own, made
for the run) and delete them; point it at a cluster you may load, not at
one serving production. The other connection flags (TLS, --user,
--dial-timeout, --namespace) then apply, and default from the environment
as for the other commands ($ETCDCTL_CACERT, $ETCDCTL_CERT, $ETCDCTL_KEY,
$ETCDCTL_USER, $ETCDCTL_DIAL_TIMEOUT, $ETCDLOCK_NAMESPACE; the password
from $ETCDLOCK_PASSWORD or $ETCDCTL_PASSWORD, or else asked for on the
terminal); without --endpoints they are refused. --fsync is then the
server's own setting and may not be given, and the CPU figures are this
process's alone: clients and library.

The exit status is 0, 2 for bad usage, 120 if --endpoints names an etcd
that does not answer within --dial-timeout, and 1 for other failures.

The output is a table (or, with --json, one JSON array of objects with keys
impl, scenario, contenders, ops_per_sec, p50_ms, p99_ms, and more), preceded
by the machine and the etcd version. Progress goes to stderr.`

// benchConfig is bench's parsed flags.
type benchConfig struct {
	duration   time.Duration // per cell and round
	fsync      bool
	contenders []int
	json       bool
	rounds     int
	only       []string // implementations whose groups run; empty: all
	cpuProfile string   // file for a CPU profile of the whole run; "": none
	scale      bool     // run the scale rows (bench_scale.go) instead
	// scaleMutex is the mutex rows' contender counts with --scale: 32 and
	// 1000, or --contenders when given.
	scaleMutex []int
	// conn are the connection flags; external says --endpoints was given
	// on the command line: the bench then runs against that etcd.
	conn     cmdline.Conn
	external bool
}

// setupBench defines bench's flags.
func setupBench(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) int {
	cfg := benchConfig{contenders: []int{2, 8, 32}}
	fs.DurationVar(&cfg.duration, "duration", 3*time.Second, "measured time per cell and round")
	fs.BoolVar(&cfg.fsync, "fsync", true, "fsync etcd's WAL and database (false: etcd's unsafe-no-fsync)")
	fs.Func("contenders", "comma-separated `list` of contender counts for the contended cells (default 2,8,32; empty: none)", func(s string) error {
		var err error
		cfg.contenders, err = parseCounts(s)
		return err
	})
	fs.BoolVar(&cfg.json, "json", false, "print one JSON array of result objects instead of the table")
	fs.IntVar(&cfg.rounds, "rounds", 1, "times to run each cell, alternating with the cells it is compared with; figures are medians")
	fs.Func("only", "comma-separated `list` of implementations (e.g. etcdlock-sem,etcdlock-rw): run only the groups of cells that measure one of them, with their baselines", func(s string) error {
		cfg.only = nil
		for f := range strings.SplitSeq(s, ",") {
			if f = strings.TrimSpace(f); f != "" {
				cfg.only = append(cfg.only, f)
			}
		}
		if len(cfg.only) == 0 {
			return errors.New("no implementation named")
		}
		return nil
	})
	fs.BoolVar(&cfg.scale, "scale", false, "run the scale rows instead: many waiters, readers, permits' clients and holds (see bench_scale.go's help in --help)")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of this process over the whole run (server, clients and library together; with --endpoints, clients and library) to `file`")
	cfg.conn.Register(fs)
	fs.Lookup("endpoints").Usage = "run against the etcd at these comma-separated `endpoints` instead of an embedded one (only from the command line)"
	fs.Lookup("namespace").Usage = "with --endpoints: `prefix` under which the cells write (and delete) their keys"
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		given := make(map[string]bool)
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		// Only the command line switches to an outside etcd: an
		// $ETCDCTL_ENDPOINTS left in the environment must not turn a bench
		// of the embedded server into load on a cluster.
		cfg.external = given["endpoints"]
		cfg.scaleMutex = []int{32, 1000}
		if given["contenders"] {
			cfg.scaleMutex = cfg.contenders
		}
		if !cfg.external {
			for _, f := range []string{"cacert", "cert", "key", "user", "dial-timeout", "namespace"} {
				if given[f] {
					return benchCmd().BadUsage(stderr, "--%s needs --endpoints: without it the bench measures an embedded etcd", f)
				}
			}
		} else {
			// Before resolve, which takes an empty list for the default
			// endpoint: "--endpoints ''" must not bench 127.0.0.1:2379.
			if len(cfg.conn.EndpointList()) == 0 {
				return benchCmd().BadUsage(stderr, "--endpoints names no endpoint")
			}
			if given["fsync"] {
				return benchCmd().BadUsage(stderr, "--fsync is the server's own setting with --endpoints")
			}
			if err := cfg.conn.Resolve(); err != nil {
				return benchCmd().Report(stderr, err, cmdline.ExitUsage)
			}
		}
		switch {
		case cfg.duration <= 0:
			return benchCmd().BadUsage(stderr, "--duration must be positive, not %v", cfg.duration)
		case cfg.rounds < 1:
			return benchCmd().BadUsage(stderr, "--rounds must be at least 1, not %d", cfg.rounds)
		}
		if len(cfg.only) > 0 && len(selectGroups(benchPlan(cfg), cfg.only)) == 0 {
			return benchCmd().BadUsage(stderr, "--only %s names no implementation the bench measures", strings.Join(cfg.only, ","))
		}
		return runBench(ctx, cfg, stdout, stderr)
	}
}

// selectGroups returns the groups of plan with a cell of one of impls.
func selectGroups(plan []group, impls []string) []group {
	var out []group
	for _, g := range plan {
		if slices.ContainsFunc(g.cells, func(c *cell) bool { return slices.Contains(impls, c.impl) }) {
			out = append(out, g)
		}
	}
	return out
}

// parseCounts parses a comma-separated list of distinct positive integers;
// the empty string is the empty list.
func parseCounts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("%d given twice", n)
		}
		out = append(out, n)
	}
	return out, nil
}

// benchEnv is what every cell runs against: the server (embedded, or
// outside with --endpoints) and a client of the bench's own, for checks and
// cleanup.
type benchEnv struct {
	// dial returns a new client of the server with opts; the caller
	// closes it.
	dial      func(opts []grpc.DialOption) (*clientv3.Client, error)
	endpoints []string // asked in turn for the server's status
	root      string   // prefix of every cell's namespace
	admin     *clientv3.Client
	seq       int // numbers the cells' namespaces
	// tally counts the requests of every client made by newClient.
	tally reqTally
}

// newClient returns a new client of the server, whose requests count in
// e.tally; the caller closes it.
func (e *benchEnv) newClient() (*clientv3.Client, error) { return e.dial(e.tally.dialOptions()) }

// newSession returns a new client and a concurrency session on it with the
// bench's TTL, for etcd's recipes; on error nothing is left open.
func (e *benchEnv) newSession() (*clientv3.Client, *concurrency.Session, error) {
	cli, err := e.newClient()
	if err != nil {
		return nil, nil, err
	}
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(benchTTL))
	if err != nil {
		return nil, nil, errors.Join(err, cmdline.CloseClient(cli)())
	}
	return cli, s, nil
}

// namespace returns a key prefix no other cell run uses.
func (e *benchEnv) namespace(c *cell) string {
	e.seq++
	return fmt.Sprintf("%s%d-%s-%s-%d/", e.root, e.seq, c.impl, c.scenario, c.contenders)
}

// checkEmpty returns an error if any key is left under ns, after deleting
// them so that later cells start clean.
func (e *benchEnv) checkEmpty(ns string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	resp, err := e.admin.Delete(ctx, ns, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("checking for leftover keys under %s: %w", ns, err)
	}
	if resp.Deleted > 0 {
		return fmt.Errorf("%d keys left under %s", resp.Deleted, ns)
	}
	return nil
}

// runBench runs the bench and prints the results; it returns the exit
// status.
func runBench(ctx context.Context, cfg benchConfig, stdout, stderr io.Writer) int {
	plan := benchPlan(cfg)
	if cfg.scale {
		plan = scalePlan(cfg.scaleMutex)
	}
	if len(cfg.only) > 0 {
		plan = selectGroups(plan, cfg.only)
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return cmdline.ExitFailure
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return cmdline.ExitFailure
		}
		defer pprof.StopCPUProfile()
	}
	var (
		env  *benchEnv
		rows []row
		info benchInfo
		err  error
	)
	if cfg.external {
		if env, err = outsideEnv(ctx, &cfg.conn); err != nil {
			return benchCmd().Report(stderr, err, cmdline.ExitFailure)
		}
		rows, info, err = env.run(ctx, cfg, plan, stderr)
	} else {
		var opts []embedded.Option
		if !cfg.fsync {
			opts = append(opts, embedded.WithoutFsync())
		}
		srv, serr := embedded.StartServer(opts...)
		if serr != nil {
			fmt.Fprintf(stderr, "bench: starting etcd: %v\n", serr)
			return cmdline.ExitFailure
		}
		env = &benchEnv{dial: func(opts []grpc.DialOption) (*clientv3.Client, error) {
			return srv.NewClient(func(c *clientv3.Config) { c.DialOptions = append(c.DialOptions, opts...) })
		}, endpoints: srv.Endpoints(), root: "etcdlock-bench/"}
		env.tally.events, env.tally.fsyncs = serverEvents, serverFsyncs
		rows, info, err = env.run(ctx, cfg, plan, stderr)
		if err != nil {
			// The server's own failure, if it broke, says more than its
			// clients' timeouts.
			err = errors.Join(err, srv.Err())
		}
		if cerr := srv.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing etcd: %w", cerr))
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return cmdline.ExitFailure
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return cmdline.ExitFailure
		}
		return cmdline.ExitOK
	}
	printTable(stdout, cfg, info, rows)
	return cmdline.ExitOK
}

// benchInfo describes where the bench ran.
type benchInfo struct {
	cpus        int
	goos, arch  string
	cpuModel    string // "" if unknown
	etcdVersion string
}

// run measures every group of the plan and returns one row per cell.
func (e *benchEnv) run(ctx context.Context, cfg benchConfig, plan []group, progress io.Writer) (rows []row, info benchInfo, err error) {
	if e.admin, err = e.newClient(); err != nil {
		return nil, info, fmt.Errorf("creating client: %w", err)
	}
	defer func() {
		if cerr := cmdline.CloseClient(e.admin)(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing client: %w", cerr))
		}
	}()
	info = benchInfo{cpus: runtime.NumCPU(), goos: runtime.GOOS, arch: runtime.GOARCH, cpuModel: cpuModel()}
	// Any endpoint that answers will do: the connect probe may have gone
	// through another than the first.
	var st *clientv3.StatusResponse
	for _, ep := range e.endpoints {
		sctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
		st, err = e.admin.Status(sctx, ep)
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, info, fmt.Errorf("reading etcd's status: %w", err)
	}
	info.etcdVersion = st.Version
	fmt.Fprintf(progress, "bench: %v per cell, %d round(s), %s, etcd %s, %d CPUs\n",
		cfg.duration, cfg.rounds, serverDesc(cfg), info.etcdVersion, info.cpus)

	results := make(map[cellKey][]sample)
	for _, g := range plan {
		for r := range cfg.rounds {
			if g.interleaved {
				if err := e.runGroupInterleaved(ctx, g, r, cfg, progress, results); err != nil {
					return nil, info, err
				}
				continue
			}
			order := slices.Clone(g.cells)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, c := range order {
				if err := ctx.Err(); err != nil {
					return nil, info, context.Cause(ctx)
				}
				fmt.Fprintf(progress, "  %-12s %-12s %3d  round %d/%d\n", c.impl, c.scenario, c.contenders, r+1, cfg.rounds)
				ns := e.namespace(c)
				s, err := c.measure(ctx, e, ns, cfg.duration)
				if cerr := e.checkEmpty(ns); cerr != nil {
					err = errors.Join(err, cerr)
				}
				if err != nil {
					return nil, info, fmt.Errorf("%s %s/%d: %w", c.impl, c.scenario, c.contenders, err)
				}
				results[c.key()] = append(results[c.key()], s)
			}
		}
	}
	rows = summarize(plan, results)
	for i := range rows {
		r := &rows[i]
		r.DurationS, r.Server = cfg.duration.Seconds(), "embedded"
		if cfg.external {
			r.Server = "external"
		} else {
			r.Fsync = &cfg.fsync
		}
		r.EtcdVersion, r.CPUs, r.CPUModel = info.etcdVersion, info.cpus, info.cpuModel
		r.Platform = info.goos + "/" + info.arch
	}
	return rows, info, nil
}

// runGroupInterleaved runs round r of an interleaved group and adds its
// samples to results.
func (e *benchEnv) runGroupInterleaved(ctx context.Context, g group, r int, cfg benchConfig, progress io.Writer, results map[cellKey][]sample) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	var names []string
	nss := make([]string, len(g.cells))
	for i, c := range g.cells {
		names = append(names, c.impl+" "+c.scenario)
		nss[i] = e.namespace(c)
	}
	fmt.Fprintf(progress, "  %s, interleaved  round %d/%d\n", strings.Join(names, ", "), r+1, cfg.rounds)
	ss, err := runInterleaved(ctx, e, g.cells, nss, cfg.duration)
	for _, ns := range nss {
		if cerr := e.checkEmpty(ns); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}
	if err != nil {
		return err
	}
	for i, c := range g.cells {
		results[c.key()] = append(results[c.key()], ss[i])
	}
	return nil
}

// serverDesc says which etcd the bench measures.
func serverDesc(cfg benchConfig) string {
	if cfg.external {
		return "external at " + strings.Join(cfg.conn.EndpointList(), ",")
	}
	if cfg.fsync {
		return "embedded, 1 member, fsync on"
	}
	return "embedded, 1 member, fsync off"
}

// outsideEnv connects to the etcd of --endpoints. Its cells' keys go under
// the namespace, in a prefix made for this run, so that two benches at once
// (or a bench and etcdlock's own keys) never meet.
func outsideEnv(ctx context.Context, conn *cmdline.Conn) (*benchEnv, error) {
	cfg, err := conn.Config(ctx)
	if err != nil {
		return nil, err
	}
	root := fmt.Sprintf("%sbench-%08x/", conn.Namespace, rand.Uint32())
	// Reach it once first, so that a wrong endpoint or a refused login is
	// told as such, with connect's exit status.
	cli, err := conn.ConnectWith(ctx, cfg, root)
	if err != nil {
		return nil, err
	}
	cmdline.CloseQuietly(cli)
	return &benchEnv{
		dial: func(opts []grpc.DialOption) (*clientv3.Client, error) {
			c := cfg
			c.DialOptions = append(slices.Clip(c.DialOptions), opts...)
			return clientv3.New(c)
		},
		endpoints: cfg.Endpoints,
		root:      root,
	}, nil
}

// cpuModel returns the CPU model named in /proc/cpuinfo, or "".
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// row is one line of the bench's output, and one object of its JSON.
type row struct {
	Impl       string  `json:"impl"`
	Scenario   string  `json:"scenario"`
	Contenders int     `json:"contenders"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	// Ratio compares the row to its baseline as RatioOf says; absent for
	// rows without a baseline.
	Ratio   *float64 `json:"ratio,omitempty"`
	RatioOf string   `json:"ratio_of,omitempty"`
	// PerPut and PerFloor are, for the contended mutex rows, the row's
	// ops/s over the serial Put's measured in turn with it (the put serial
	// row of as many contenders), and over the floor row's of as many
	// contenders (absent for the floor row itself): medians over rounds of
	// the ratio within each round. The readers and semaphore rows have
	// PerFloor alone, over their permit floor row's (floor-rw, floor-sem).
	PerPut   *float64 `json:"per_put,omitempty"`
	PerFloor *float64 `json:"per_floor,omitempty"`
	// CPUCores is the process's CPU time over the measured time: how many
	// of the machine's cores the cell kept busy (server, clients and library
	// together, as they run in one process). CPUPerOpUs is that CPU time per
	// operation, in microseconds. Both are medians over rounds, and absent
	// where the platform does not say (outside Unix).
	CPUCores   *float64 `json:"cpu_cores,omitempty"`
	CPUPerOpUs *float64 `json:"cpu_us_per_op,omitempty"`
	// Requests per operation, for the contended rows (medians over
	// rounds; absent elsewhere), of every contender's client together:
	// write Txns (a put or a delete), reads (Ranges and read-only Txns),
	// watch creates, and watch streams opened.
	TxnPerOp          *float64 `json:"txn_per_op,omitempty"`
	ReadsPerOp        *float64 `json:"reads_per_op,omitempty"`
	WatchCreatesPerOp *float64 `json:"watch_creates_per_op,omitempty"`
	StreamsPerOp      *float64 `json:"streams_per_op,omitempty"`
	// The scale rows' figures (see bench_scale.go).
	scaleFigures
	// Ops is the number of operations measured, over all rounds.
	Ops int `json:"ops"`
	// OpsByContender is Ops split by contender (for the readers row: 8
	// readers, then the writer); absent for cells of one client.
	OpsByContender []int `json:"ops_by_contender,omitempty"`
	// Rounds is the number of rounds the figures are the median of.
	Rounds int `json:"rounds"`
	// Measures says what an operation and the latencies are.
	Measures string `json:"measures"`
	// Where and how the row was measured, so that saved results describe
	// themselves.
	DurationS float64 `json:"duration_s"` // per cell and round
	// Server is "embedded" (one member in this process; Fsync says how it
	// wrote) or "external" (--endpoints; Fsync absent, the CPU figures are
	// the clients' alone).
	Server      string `json:"server"`
	Fsync       *bool  `json:"fsync,omitempty"`
	EtcdVersion string `json:"etcd_version"`
	CPUs        int    `json:"cpus"`
	Platform    string `json:"platform"` // GOOS/GOARCH
	CPUModel    string `json:"cpu_model,omitempty"`
}

// summarize turns the samples of every cell into rows, in plan order, with
// the median over rounds of each figure and the ratio to the baseline.
func summarize(plan []group, results map[cellKey][]sample) []row {
	var rows []row
	byKey := make(map[cellKey]*row)
	for _, g := range plan {
		for _, c := range g.cells {
			ss := results[c.key()]
			r := row{
				Impl:       c.impl,
				Scenario:   c.scenario,
				Contenders: c.contenders,
				Rounds:     len(ss),
				Measures:   c.measures,
			}
			var ops, p50, p99, cores, cpuPerOp []float64
			var perOp [4][]float64 // writes, reads, creates, streams
			cpuOK := len(ss) > 0
			for _, s := range ss {
				if s.reqs != nil && s.ops > 0 {
					n := float64(s.ops)
					for i, v := range []int64{s.reqs.writes, s.reqs.reads, s.reqs.creates, s.reqs.streams} {
						perOp[i] = append(perOp[i], float64(v)/n)
					}
				}
				cpuOK = cpuOK && s.cpuOK && s.elapsed > 0 && s.ops > 0
				if cpuOK {
					cores = append(cores, float64(s.cpu)/float64(s.elapsed))
					cpuPerOp = append(cpuPerOp, float64(s.cpu.Microseconds())/float64(s.ops))
				}
				r.Ops += s.ops
				if len(s.byContender) > 1 {
					if r.OpsByContender == nil {
						r.OpsByContender = make([]int, len(s.byContender))
					}
					for i, n := range s.byContender {
						r.OpsByContender[i] += n
					}
				}
				ops = append(ops, s.opsPerSec())
				p50 = append(p50, ms(percentile(s.lat, 50)))
				p99 = append(p99, ms(percentile(s.lat, 99)))
			}
			r.OpsPerSec, r.P50Ms, r.P99Ms = median(ops), median(p50), median(p99)
			r.scaleFigures = summarizeScale(c, ss)
			if cpuOK {
				c, u := median(cores), median(cpuPerOp)
				r.CPUCores, r.CPUPerOpUs = &c, &u
			}
			if len(perOp[0]) == len(ss) && len(ss) > 0 {
				m := [4]float64{median(perOp[0]), median(perOp[1]), median(perOp[2]), median(perOp[3])}
				r.TxnPerOp, r.ReadsPerOp, r.WatchCreatesPerOp, r.StreamsPerOp = &m[0], &m[1], &m[2], &m[3]
			}
			rows = append(rows, r)
		}
	}
	for i := range rows {
		byKey[cellKey{rows[i].Impl, rows[i].Scenario, rows[i].Contenders}] = &rows[i]
	}
	for _, g := range plan {
		for _, c := range g.cells {
			if c.floor != nil {
				byKey[c.key()].PerFloor = pairedRatio(results[c.key()], results[*c.floor])
			}
			if c.perPut == nil {
				continue
			}
			r := byKey[c.key()]
			r.PerPut = pairedRatio(results[c.key()], results[*c.perPut])
			if c.impl != "floor" {
				r.PerFloor = pairedRatio(results[c.key()], results[cellKey{"floor", "contended", c.contenders}])
			}
		}
	}
	for _, g := range plan {
		for _, c := range g.cells {
			if c.base == nil {
				continue
			}
			r, b := byKey[c.key()], byKey[c.base.key]
			if b == nil || r.OpsPerSec == 0 || b.OpsPerSec == 0 {
				continue
			}
			var ratio float64
			switch c.base.kind {
			case ratioSpeed:
				ratio = r.OpsPerSec / b.OpsPerSec
			case ratioTime:
				ratio = b.OpsPerSec / (float64(c.base.per) * r.OpsPerSec)
			}
			r.Ratio, r.RatioOf = &ratio, c.base.label
		}
	}
	return rows
}

// pairedRatio returns the median over rounds of the ops/s of ss over those
// of bs in the same round (cells of one group run in turn within a round,
// so that a machine whose load drifts from round to round skews each ratio
// less than it skews the medians of each), or nil unless both have every
// round and a rate in each.
func pairedRatio(ss, bs []sample) *float64 {
	if len(ss) == 0 || len(ss) != len(bs) {
		return nil
	}
	xs := make([]float64, len(ss))
	for i := range ss {
		a, b := ss[i].opsPerSec(), bs[i].opsPerSec()
		if a == 0 || b == 0 {
			return nil
		}
		xs[i] = a / b
	}
	m := median(xs)
	return &m
}

// printTable writes the human form of the results.
func printTable(w io.Writer, cfg benchConfig, info benchInfo, rows []row) {
	if cfg.scale {
		printScaleTable(w, cfg, info, rows)
		return
	}
	model := info.cpuModel
	if model == "" {
		model = "unknown CPU"
	}
	fmt.Fprintf(w, "machine: %d CPUs, %s/%s, %s\n", info.cpus, info.goos, info.arch, model)
	fmt.Fprintf(w, "etcd:    %s, %s\n", info.etcdVersion, serverDesc(cfg))
	rounds := "1 round"
	if cfg.rounds > 1 {
		rounds = fmt.Sprintf("median of %d rounds", cfg.rounds)
	}
	fmt.Fprintf(w, "cells:   %v each, %s\n\n", cfg.duration, rounds)
	cells := [][]string{{"impl", "scenario", "contenders", "ops/s", "p50 ms", "p99 ms", "cores", "cpu us/op", "txn/op", "reads/op", "creates/op", "streams/op", "events/op", "fsyncs/op", "wal busy", "/put", "/floor", "ratio"}}
	for _, r := range rows {
		ratio := "-"
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2fx %s", *r.Ratio, r.RatioOf)
		}
		cores, perOp := "-", "-"
		if r.CPUCores != nil && r.CPUPerOpUs != nil {
			cores, perOp = fmt.Sprintf("%.2f", *r.CPUCores), fmt.Sprintf("%.0f", *r.CPUPerOpUs)
		}
		reqs := []string{"-", "-", "-", "-", "-", "-", "-", "-", "-"}
		for i, v := range []*float64{r.TxnPerOp, r.ReadsPerOp, r.WatchCreatesPerOp, r.StreamsPerOp, r.EventsPerOp, r.FsyncsPerOp, r.WALBusy, r.PerPut, r.PerFloor} {
			if v != nil {
				reqs[i] = fmt.Sprintf("%.2f", *v)
			}
		}
		cells = append(cells, append(append([]string{r.Impl, r.Scenario, strconv.Itoa(r.Contenders),
			fmt.Sprintf("%.0f", r.OpsPerSec), fmt.Sprintf("%.2f", r.P50Ms), fmt.Sprintf("%.2f", r.P99Ms), cores, perOp},
			reqs...), ratio))
	}
	// Names left-aligned, numbers right-aligned, ratio left-aligned last.
	writeTable(w, cells, []bool{false, false, true, true, true, true, true, true, true, true, true, true, true, true, true, true, true, false})
	fmt.Fprint(w, "\nput put: one Put by one client; put serial N: the same, run in turn with the\n")
	fmt.Fprint(w, "  rows of N contenders below it. put parallel: Puts by as many clients as the\n")
	fmt.Fprint(w, "  rows above it, each its own key; a read hold or a permit is two writes, so\n")
	fmt.Fprint(w, "  half this rate is the most those rows can reach on this server.\n")
	fmt.Fprint(w, "uncontended: one Lock+Unlock cycle, latency of the cycle; txn: the two requests\n")
	fmt.Fprint(w, "  of an etcdlock cycle sent bare, with no library. contended, readers,\n")
	fmt.Fprint(w, "  writers: one hold, latency = wait from calling Lock to holding.\n")
	for _, r := range rows {
		if r.Impl == "etcdlock-rw" && r.Scenario == "readers" {
			if reads, writes := readsPerWrite(r.OpsByContender); writes > 0 {
				fmt.Fprintf(w, "  readers: %d readers and a writer; %.1f read holds per write hold.\n", len(r.OpsByContender)-1, float64(reads)/float64(writes))
			}
		}
	}
	if cfg.external {
		fmt.Fprintf(w, "cores: CPU time of this process (clients, library; not the server) over the\n")
	} else {
		fmt.Fprintf(w, "cores: CPU time of the whole process (server, clients, library) over the\n")
	}
	fmt.Fprintf(w, "  measured time, of the machine's %d; cpu us/op: that CPU per operation.\n", info.cpus)
	fmt.Fprint(w, "txn/op, reads/op, creates/op, streams/op (contended rows): requests of all the\n")
	fmt.Fprint(w, "  contenders per critical section: write Txns, reads (Ranges, read-only Txns),\n")
	fmt.Fprint(w, "  watch creates, watch streams opened. events/op, fsyncs/op: the watch events\n")
	fmt.Fprint(w, "  the server sent and its WAL fsyncs, per operation; wal busy: the part of\n")
	fmt.Fprint(w, "  the measured time the server spent in WAL fsyncs (embedded server only).\n")
	fmt.Fprint(w, "floor, floor-noread (contended): the bare requests of a lock.Mutex handoff, no\n")
	fmt.Fprint(w, "  library: enqueue Txn, a watch on the key ahead kept from wait to wait, one\n")
	fmt.Fprint(w, "  read after its delete (floor-noread: none), release Txn. /put, /floor: the\n")
	fmt.Fprint(w, "  row's ops/s over its put serial row's and over its floor row's.\n")
	fmt.Fprint(w, "floor-sem, floor-rw (and -noread): the bare requests of a FIFO queue of\n")
	fmt.Fprint(w, "  permits, no library: enqueue Txn reading the keys ahead, one watch of the\n")
	fmt.Fprint(w, "  queue kept for good (a reader: of the writer ahead), one read once the\n")
	fmt.Fprint(w, "  deletes admit it (-noread: none), release Txn; /floor of etcdlock-sem and\n")
	fmt.Fprint(w, "  etcdlock-rw: their ops/s over these rows'.\n")
	fmt.Fprint(w, "handoff: one change of leader. ratio: \"time of\" is lower-better, the rest\n")
	fmt.Fprint(w, "  higher-better; --json gives what each row measures.\n")
}

// readsPerWrite returns the read and write holds of a readers row's
// OpsByContender: the last contender writes, the others read.
func readsPerWrite(byContender []int) (reads, writes int) {
	if len(byContender) < 2 {
		return 0, 0
	}
	for _, n := range byContender[:len(byContender)-1] {
		reads += n
	}
	return reads, byContender[len(byContender)-1]
}

// writeTable writes cells as columns separated by two spaces, each
// right-aligned where right says so and left-aligned otherwise, with no
// trailing spaces.
func writeTable(w io.Writer, cells [][]string, right []bool) {
	widths := make([]int, len(right))
	for _, r := range cells {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	for _, r := range cells {
		var b strings.Builder
		for i, c := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", widths[i]-len(c))
			if right[i] {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// percentile returns the p-th percentile (nearest rank) of ds, or 0 for
// none. It sorts ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(p/100*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// median returns the median of xs, or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// ms converts d to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
