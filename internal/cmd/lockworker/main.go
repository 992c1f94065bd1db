// Command lockworker is a holder process of the process-level fault suite
// (internal/procnemesis): a program using etcdlock as a user would, whose
// every critical section reads three counters and writes each one plus
// one. Two of them are fenced by the hold's token (a key in etcd written
// through fencing.Commit, and a row of a SQLite database admitted by
// fencing/sqlfence); the third, an etcd key read and written plainly, is
// the unfenced control. It appends what it does to a history file (package
// record). It is a maintainer's tool, not part of etcdlock.
//
// Safety model: a lease-based lock cannot stop a paused holder from acting
// after its lease expired; the fencing token (the lock key's create
// revision, which only ever grows) makes the fenced counters refuse it. The
// control has no such protection and loses updates.
//
// lockworker worker ... loops: lock.Mutex Lock, critical section, Unlock,
// until SIGTERM. An Unlock that etcd does not answer within a quarter of
// the TTL may have landed or not: it is retried after the next Lock
// returns, and must not touch that newer hold. On SIGUSR1 it stops itself
// (SIGSTOP) at its next critical section's pause point, between its reads
// and its writes: the suite resumes it (SIGCONT) after its lease has
// expired. On SIGHUP it lingers at its next pause point for three TTLs,
// or until its hold's Done closes: a long job that watches its hold.
//
// lockworker job ... runs one critical section under the hold of the
// `etcdlock run` that started it ($ETCDLOCK_KEY, $ETCDLOCK_TOKEN,
// $ETCDLOCK_LEASE), and exits; SIGTERM (the hold was lost) ends it.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
	"github.com/etcdlock/etcdlock/internal/bugs"
	"github.com/etcdlock/etcdlock/internal/procnemesis/record"
	"github.com/etcdlock/etcdlock/lock"
)

// opTimeout bounds one access.
const opTimeout = 3 * time.Second

type worker struct {
	cli            *clientv3.Client
	db             *sql.DB
	fence          *sqlfence.Fence
	log            *record.Log
	lg             *zap.Logger // the library's log (-trace), else a no-op
	acks           *ackLog     // until when etcd acknowledged each lease
	reg, ctl, sqlr string      // etcd register key, control key, SQL resource and counter row
	nextID         atomic.Int64
	freeze         atomic.Bool
	linger         atomic.Bool
	ttl            time.Duration
	giveUp         time.Duration
}

func main() { os.Exit(run()) }

func run() int {
	if len(os.Args) < 2 || (os.Args[1] != "worker" && os.Args[1] != "job") {
		fmt.Fprintln(os.Stderr, "usage: lockworker worker|job [flags]")
		return 2
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	var (
		endpoints, name, ns, hist, dsn string
		ttl                            time.Duration
		start                          int64
		w                              worker
	)
	fs.StringVar(&endpoints, "endpoints", "", "comma-separated etcd endpoints")
	fs.StringVar(&name, "lock", "", "the mutex's name (worker)")
	fs.StringVar(&ns, "namespace", "", "etcdlock namespace (worker)")
	fs.DurationVar(&ttl, "ttl", 2*time.Second, "the hold's lease TTL (worker)")
	fs.DurationVar(&w.giveUp, "give-up", 0, "give up each wait for the lock after a random time up to this (worker; 0: wait as long as it takes)")
	fs.StringVar(&hist, "history", "", "history file to append to")
	fs.Int64Var(&start, "start", 0, "the run's start, Unix nanoseconds")
	fs.StringVar(&dsn, "sqlite", "", "SQLite DSN of the fenced SQL counter")
	fs.StringVar(&w.reg, "reg", "", "etcd key of the fenced counter")
	fs.StringVar(&w.ctl, "ctl", "", "etcd key of the unfenced control counter")
	fs.StringVar(&w.sqlr, "sql-resource", "", "SQL counter row and fence resource")
	trace := fs.Bool("trace", false, "log the library's state changes and every lease renewal to stderr (worker)")
	bug := fs.String("bug", "", "switch on this planted bug (a build with -tags etcdlock_bugs only)")
	_ = fs.Parse(os.Args[2:])
	if *bug != "" {
		if err := plant(*bug); err != nil {
			fmt.Fprintln(os.Stderr, "lockworker:", err)
			return 2
		}
	}
	if endpoints == "" || hist == "" || start == 0 || dsn == "" || w.reg == "" || w.ctl == "" || w.sqlr == "" {
		fmt.Fprintln(os.Stderr, "lockworker: -endpoints, -history, -start, -sqlite, -reg, -ctl and -sql-resource are required")
		return 2
	}
	var err error
	if w.log, err = record.Open(hist, start); err != nil {
		fmt.Fprintln(os.Stderr, "lockworker:", err)
		return 1
	}
	defer w.log.Close()
	w.acks = newAckLog()
	w.cli, err = clientv3.New(clientv3.Config{
		Endpoints: strings.Split(endpoints, ","), DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainStreamInterceptor(w.acks.interceptor)},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockworker:", err)
		return 1
	}
	defer w.cli.Close()
	if w.db, err = sql.Open("sqlite", dsn); err != nil {
		fmt.Fprintln(os.Stderr, "lockworker:", err)
		return 1
	}
	defer w.db.Close()
	if w.fence, err = sqlfence.New(sqlfence.SQLite, ""); err != nil {
		fmt.Fprintln(os.Stderr, "lockworker:", err)
		return 1
	}
	if mode == "job" {
		return w.job()
	}
	w.ttl = ttl
	w.lg = zap.NewNop()
	if *trace {
		zc := zap.NewProductionConfig()
		zc.Level = zap.NewAtomicLevelAt(zap.DebugLevel)
		zc.OutputPaths = []string{"stderr"}
		zc.Sampling = nil
		zc.EncoderConfig.TimeKey = "ts"
		zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		if w.lg, err = zc.Build(); err != nil {
			fmt.Fprintln(os.Stderr, "lockworker:", err)
			return 1
		}
		defer func() { _ = w.lg.Sync() }()
	}
	return w.loop(name, ns, ttl)
}

// loop is the worker mode.
func (w *worker) loop(name, ns string, ttl time.Duration) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	usr := make(chan os.Signal, 2)
	signal.Notify(usr, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s := range usr {
			if s == syscall.SIGHUP {
				w.linger.Store(true)
				continue
			}
			w.freeze.Store(s == syscall.SIGUSR1) // SIGUSR2 withdraws the request
		}
	}()
	defer func() {
		signal.Stop(usr)
		close(usr)
		<-done
	}()
	m, err := lock.NewMutex(w.cli, name, lock.WithTTL(ttl), lock.WithNamespace(ns), lock.WithLogger(w.lg))
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockworker:", err)
		return 1
	}
	defer m.Close()
	var pending []unsettled // Unlocks of unknown outcome
	for ctx.Err() == nil {
		invoke := w.log.Now()
		lctx, cancel := ctx, context.CancelFunc(func() {})
		if w.giveUp > 0 {
			// Between a quarter of it and all of it: waiters give up at
			// different times, so that one behind another that gave up
			// may still be waiting, for a frozen holder for example.
			lctx, cancel = context.WithTimeout(ctx, w.giveUp/4+rand.N(w.giveUp*3/4))
		}
		h, err := m.Lock(lctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && lctx.Err() == nil {
				time.Sleep(50 * time.Millisecond) // etcd unreachable for now: do not spin
			}
			continue
		}
		// etcd answers again: retry the Unlocks whose outcome was unknown.
		// They must leave the new hold alone, whose key, on the same
		// lease, a library naming keys by lease alone would reuse.
		pending = w.retryUnlocks(pending, ttl)
		ret := w.log.Now()
		tok := h.Token()
		context.AfterFunc(h.Context(), func() {
			var acked int64 // until when etcd had acknowledged the lease (ackLog)
			if u := w.acks.Until(int64(h.Lease())); !u.IsZero() {
				acked = w.log.Now() + int64(time.Until(u))
			}
			var at int64 // when Done closed, if the library says; else now
			var lost *lock.LostError
			if errors.As(context.Cause(h.Context()), &lost) && !lost.At.IsZero() {
				at = w.log.At(lost.At)
			}
			w.log.Put(record.Line{Kind: record.Done, At: at, Key: tok.Key, Token: tok.Revision, Cause: causeName(context.Cause(h.Context())), Acked: acked})
		})
		w.section(tok, h.Done(), func(rpost int64) {
			w.log.Put(record.Line{Kind: record.Grant, Key: tok.Key, Token: tok.Revision, Lease: int64(h.Lease()),
				Invoke: invoke, Return: ret, RPost: rpost})
		})
		w.log.Put(record.Line{Kind: record.Unlock, Key: tok.Key, Token: tok.Revision})
		if !w.unlock(h, ttl) {
			pending = append(pending, unsettled{h: h})
		}
	}
	return 0
}

// unlock unlocks h, giving etcd a quarter of the TTL to answer, and
// reports whether the outcome is settled (h's key deleted, or not held any
// more). An Unlock that timed out may have landed: it is retried later,
// as a careful client does.
func (w *worker) unlock(h *lock.Hold, ttl time.Duration) bool {
	uctx, cancel := context.WithTimeout(context.Background(), ttl/4)
	defer cancel()
	err := h.Unlock(uctx)
	return err == nil || errors.Is(err, lock.ErrNotHeld) || errors.Is(err, lock.ErrClientClosed)
}

// unsettled is an Unlock of unknown outcome, and how often it was retried.
type unsettled struct {
	h     *lock.Hold
	tries int
}

// retryUnlocks retries each Unlock in us once and returns those still
// unsettled, giving up on one after three retries (the library's keeper
// deletes its key anyway once etcd answers).
func (w *worker) retryUnlocks(us []unsettled, ttl time.Duration) []unsettled {
	out := us[:0]
	for _, u := range us {
		if u.tries++; !w.unlock(u.h, ttl) && u.tries < 3 {
			out = append(out, u)
		}
	}
	return out
}

// job is the job mode, under `etcdlock run`.
func (w *worker) job() int {
	tok := fencing.Token{Key: os.Getenv("ETCDLOCK_KEY")}
	tok.Revision, _ = strconv.ParseInt(os.Getenv("ETCDLOCK_TOKEN"), 10, 64)
	lease, _ := strconv.ParseInt(os.Getenv("ETCDLOCK_LEASE"), 16, 64)
	if tok.Key == "" || tok.Revision <= 0 {
		fmt.Fprintln(os.Stderr, "lockworker: job: no hold in $ETCDLOCK_KEY and $ETCDLOCK_TOKEN")
		return 2
	}
	w.log.Put(record.Line{Kind: record.Job, PID: os.Getpid(), PPID: os.Getppid()})
	// SIGTERM: etcdlock run lost the hold (or was asked to stop). The
	// job records it and exits at once, as a job that stops acting on
	// its hold should.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, ok := <-term; ok {
			w.log.Put(record.Line{Kind: record.Done, Key: tok.Key, Token: tok.Revision, Cause: "lost"})
			os.Exit(128 + int(syscall.SIGTERM))
		}
	}()
	defer func() {
		signal.Stop(term)
		close(term)
		<-done
	}()
	now := w.log.Now()
	w.section(tok, nil, func(rpost int64) {
		w.log.Put(record.Line{Kind: record.Grant, Key: tok.Key, Token: tok.Revision, Lease: lease, Invoke: now, Return: now, RPost: rpost})
	})
	w.log.Put(record.Line{Kind: record.Unlock, Key: tok.Key, Token: tok.Revision})
	return 0
}

// section is one critical section: read the three counters, the pause
// point, write each one that was read plus one. The etcd reads are
// linearizable and made after the grant: their revision bounds the
// revision at which the library decided the grant, and granted records
// the grant with it (0 if the read failed).
//
// The registers are independent of each other, so the etcd read and the
// SQL read go out together, and so do the writes (the control's put rides
// in the fenced write's Txn): a section costs the round trips of one read
// and one write, not of five accesses in a row. Each access is recorded
// with its own call and return.
//
// A worker's section (done is its hold's Done; nil for a job) may stop at
// its pause point when the suite asks: frozen (SIGSTOP), or lingering, a
// long job that ends when the hold does.
func (w *worker) section(tok fencing.Token, done <-chan struct{}, granted func(rpost int64)) {
	var (
		cv, ev, sv, rpost int64
		cst, est, sst     string
		wg                sync.WaitGroup
	)
	wg.Go(func() { sv, sst = w.access(record.RegSQL, tok, false, 0) })
	cv, cst, ev, est, rpost = w.readEtcd(tok)
	granted(rpost)
	wg.Wait()
	if done != nil && w.linger.CompareAndSwap(true, false) {
		w.log.Put(record.Line{Kind: record.Linger, Key: tok.Key, Token: tok.Revision})
		t := time.NewTimer(3 * w.ttl)
		select {
		case <-t.C:
		case <-done:
		}
		t.Stop()
	}
	if done != nil && w.freeze.CompareAndSwap(true, false) {
		w.log.Put(record.Line{Kind: record.Freeze, Key: tok.Key, Token: tok.Revision})
		// To this very thread, which stops on its way back from the call,
		// before anything more of the critical section runs; the signal
		// stops every thread of the process.
		runtime.LockOSThread()
		_ = syscall.Tgkill(os.Getpid(), syscall.Gettid(), syscall.SIGSTOP)
		runtime.UnlockOSThread()
	}
	switch {
	case est == "ok":
		// A write of unknown outcome (a connection that died under a
		// member, or while this process was frozen) is tried again, as a
		// client would: the retry's answer is definite. Each attempt is
		// recorded as an access of its own.
		wg.Go(func() {
			for range 3 {
				if st := w.writeEtcd(tok, ev+1, cv+1); st != "unknown" {
					break
				}
			}
		})
	case cst == "ok":
		wg.Go(func() { w.access(record.RegCtl, tok, true, cv+1) })
	}
	if sst == "ok" {
		wg.Go(func() { w.access(record.RegSQL, tok, true, sv+1) })
	}
	wg.Wait()
}

// writeEtcd writes v to the fenced counter through fencing.Commit and c to
// the control, in one Txn: one round trip instead of two. The control's
// put rides in both branches (see withControl), so it is written whatever
// the fence says, as an unfenced write is. It records the two accesses and
// returns the fenced write's outcome.
func (w *worker) writeEtcd(tok fencing.Token, v, c int64) string {
	regID := w.call(record.RegEtcd, tok, true, v)
	ctlID := w.call(record.RegCtl, tok, true, c)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	kv := withControl{w.cli, clientv3.OpPut(w.ctl, strconv.FormatInt(c, 10))}
	_, err := fencing.Commit(ctx, kv, tok, clientv3.OpPut(w.reg, strconv.FormatInt(v, 10)))
	est, cst := "ok", "ok"
	switch {
	case errors.Is(err, fencing.ErrFenced):
		est = "rejected"
	case err != nil:
		est, cst = "unknown", "unknown"
	}
	w.log.Put(record.Line{Kind: record.Ret, ID: regID, Status: est, Value: v})
	w.log.Put(record.Line{Kind: record.Ret, ID: ctlID, Status: cst, Value: c})
	return est
}

// withControl is a KV whose transactions also apply put, in their Then
// and in their Else branch: the unfenced control's write joins the Txn
// that fencing.Commit sends, and is applied whether or not the fence
// holds.
type withControl struct {
	clientv3.KV
	put clientv3.Op
}

func (k withControl) Txn(ctx context.Context) clientv3.Txn { return controlTxn{k.KV.Txn(ctx), k.put} }

type controlTxn struct {
	clientv3.Txn
	put clientv3.Op
}

func (t controlTxn) If(cs ...clientv3.Cmp) clientv3.Txn { return controlTxn{t.Txn.If(cs...), t.put} }

func (t controlTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	return controlTxn{t.Txn.Then(append(ops, t.put)...).Else(t.put), t.put}
}

// readEtcd reads the control and the fenced counter in one Txn, one
// round trip instead of two: the fenced counter only while tok's hold is
// current (the Then branch), the control either way, unfenced. It records
// them as two accesses and returns their values and outcomes, and the
// revision of the answer (0 if none).
func (w *worker) readEtcd(tok fencing.Token) (cv int64, cst string, ev int64, est string, rev int64) {
	ctlID := w.call(record.RegCtl, tok, false, 0)
	regID := w.call(record.RegEtcd, tok, false, 0)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	resp, err := w.cli.Txn(ctx).If(tok.Cmp()).
		Then(clientv3.OpGet(w.ctl), clientv3.OpGet(w.reg)).Else(clientv3.OpGet(w.ctl)).Commit()
	cst, est = "unknown", "unknown"
	if err == nil {
		rev = resp.Header.Revision
		cv, cst = value(resp.Responses[0].GetResponseRange().Kvs), "ok"
		est = "rejected"
		if resp.Succeeded {
			ev, est = value(resp.Responses[1].GetResponseRange().Kvs), "ok"
		}
	}
	w.log.Put(record.Line{Kind: record.Ret, ID: ctlID, Status: cst, Value: cv})
	w.log.Put(record.Line{Kind: record.Ret, ID: regID, Status: est, Value: ev})
	return cv, cst, ev, est, rev
}

// call records the start of an access and returns its ID.
func (w *worker) call(reg string, tok fencing.Token, write bool, v int64) int64 {
	id := w.nextID.Add(1)
	w.log.Put(record.Line{Kind: record.Call, ID: id, Reg: reg, Write: write, Value: v, Token: tok.Revision})
	return id
}

// access reads reg, or writes v to it, under tok, and records it.
func (w *worker) access(reg string, tok fencing.Token, write bool, v int64) (int64, string) {
	id := w.call(reg, tok, write, v)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var st string
	switch reg {
	case record.RegSQL:
		v, st = w.sqlAccess(ctx, tok, write, v)
	default:
		v, st = w.ctlWrite(ctx, v)
	}
	w.log.Put(record.Line{Kind: record.Ret, ID: id, Status: st, Value: v})
	return v, st
}

// ctlWrite writes v to the control plainly (the section's fenced read was
// refused, so there is no fenced write to join).
func (w *worker) ctlWrite(ctx context.Context, v int64) (int64, string) {
	if _, err := w.cli.Put(ctx, w.ctl, strconv.FormatInt(v, 10)); err != nil {
		return v, "unknown"
	}
	return v, "ok"
}

func value(kvs []*mvccpb.KeyValue) int64 {
	if len(kvs) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(string(kvs[0].Value), 10, 64)
	return n
}

// sqlAccess reads the counter, or writes v, in a transaction of its own
// that Admit opens; SQLITE_BUSY before the commit is retried.
func (w *worker) sqlAccess(ctx context.Context, tok fencing.Token, write bool, v int64) (int64, string) {
	for attempt := 0; ; attempt++ {
		n, st, err := w.sqlTx(ctx, tok, write, v)
		if st != "aborted" || attempt == 2 || ctx.Err() != nil || !busy(err) {
			return n, st
		}
	}
}

func (w *worker) sqlTx(ctx context.Context, tok fencing.Token, write bool, v int64) (int64, string, error) {
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, "aborted", err
	}
	defer tx.Rollback()
	err = w.fence.Admit(ctx, tx, w.sqlr, tok)
	if errors.Is(err, fencing.ErrStale) || errors.Is(err, sqlfence.ErrLockMismatch) {
		return v, "rejected", nil
	}
	if err != nil {
		return 0, "aborted", err
	}
	if write {
		res, err := tx.ExecContext(ctx, "UPDATE counter SET n = ? WHERE name = ?", v, w.sqlr)
		if err != nil {
			return 0, "aborted", err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return 0, "aborted", fmt.Errorf("counter %q: %d rows updated (%v)", w.sqlr, n, err)
		}
	} else if err := tx.QueryRowContext(ctx, "SELECT n FROM counter WHERE name = ?", w.sqlr).Scan(&v); err != nil {
		return 0, "aborted", err
	}
	if err := tx.Commit(); err != nil {
		return v, "unknown", err
	}
	return v, "ok", nil
}

// plant switches on the planted bug called name (internal/bugs).
func plant(name string) error {
	if !bugs.Compiled {
		return fmt.Errorf("-bug %s: planted bugs are compiled in only with -tags etcdlock_bugs", name)
	}
	for _, b := range []bugs.Bug{bugs.SkipOwnershipCheck, bugs.LeaseIDToken, bugs.UnlockByName, bugs.ReceiveTimeDeadline} {
		if b.String() == name {
			bugs.Set(b, true)
			return nil
		}
	}
	return fmt.Errorf("-bug %s: no such planted bug", name)
}

// busy reports whether SQLite refused a transaction as busy: it is
// retried as a whole.
func busy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// causeName names why a hold ended, as internal/nemesis's Grant.DoneCause.
func causeName(err error) string {
	switch {
	case errors.Is(err, lock.ErrDeadline):
		return "deadline"
	case errors.Is(err, lock.ErrDeleted):
		return "deleted"
	case errors.Is(err, lock.ErrSessionExpired):
		return "expired"
	case errors.Is(err, lock.ErrReleased):
		return "released"
	case err == nil:
		return ""
	}
	return err.Error()
}
