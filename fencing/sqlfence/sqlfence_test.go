package sqlfence_test

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
)

// TestAdmitSequence: a sequence of transactions, each admitting a token and
// writing; those whose token is older than the highest recorded are refused
// with a *fencing.StaleError naming the highest, and write nothing, even
// what they wrote before Admit.
func TestAdmitSequence(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, db *sql.DB, f *sqlfence.Fence) {
		ctx := testCtx(t)
		steps := []struct {
			res     string
			rev     int64
			highest int64 // for a refusal, the highest it names; 0: admitted
		}{
			{"invoices", 5, 0},
			{"invoices", 5, 0}, // the same hold again
			{"invoices", 4, 5},
			{"invoices", 9, 0},
			{"invoices", 5, 9},
			{"other", 1, 0}, // resources are independent
			{"invoices", 8, 9},
		}
		var want []int64 // revisions whose writes must be there
		for i, s := range steps {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			// A write before Admit: it must not survive a refusal.
			if _, err := tx.ExecContext(ctx, "INSERT INTO log (n, token) VALUES ($1, $2)", i, s.rev); err != nil {
				t.Fatal(err)
			}
			err = f.Admit(ctx, tx, s.res, tok(s.rev))
			if s.highest == 0 {
				if err != nil {
					t.Fatalf("step %d: Admit(%s, %d) = %v, want admitted", i, s.res, s.rev, err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatalf("step %d: Commit: %v", i, err)
				}
				want = append(want, s.rev)
				continue
			}
			var se *fencing.StaleError
			if !errors.Is(err, fencing.ErrStale) || !errors.As(err, &se) || se.Highest != s.highest ||
				se.Token != tok(s.rev) || se.Resource != s.res {
				t.Fatalf("step %d: Admit(%s, %d) = %#v, want a StaleError with highest %d", i, s.res, s.rev, err, s.highest)
			}
			if err := tx.Commit(); !errors.Is(err, sql.ErrTxDone) {
				t.Fatalf("step %d: Commit after a refusal = %v, want sql.ErrTxDone", i, err)
			}
		}
		rows, err := db.QueryContext(ctx, "SELECT token FROM log ORDER BY n")
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for rows.Next() {
			var r int64
			if err := rows.Scan(&r); err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if !slicesEqual(got, want) {
			t.Fatalf("committed writes %v, want %v", got, want)
		}
		if h, err := f.Highest(ctx, db, "invoices"); err != nil || h != tok(9) {
			t.Fatalf("Highest = %v, %v; want %v", h, err, tok(9))
		}
		if h, err := f.Highest(ctx, db, "never"); err != nil || !h.IsZero() {
			t.Fatalf("Highest of an unknown resource = %v, %v; want the zero Token", h, err)
		}
	})
}

func slicesEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestConcurrentOrder: in each round, goroutines with consecutive tokens
// (41, 42, ...) start fenced read-modify-write transactions at once, at
// each isolation level. Whatever the interleaving, the committed
// increments, in the order the counter gives them, carry non-decreasing
// tokens (so 41 never commits after 42 has), none is lost (the counter
// equals the commits), and the record holds the highest committed token.
// A transaction the database refuses as a whole (serialization failure,
// SQLITE_BUSY) is retried, as the package doc tells callers to.
func TestConcurrentOrder(t *testing.T) {
	const goroutines, rounds = 8, 25
	eachBackend(t, func(t *testing.T, b backend, db *sql.DB, f *sqlfence.Fence) {
		db.SetMaxOpenConns(goroutines + 2)
		ctx := testCtx(t)
		var next int64 = 40
		for _, level := range b.levels {
			var (
				mu                            sync.Mutex
				commits, stale, retries, maxC int64
			)
			for range rounds {
				base := next
				next += goroutines
				order := rand.Perm(goroutines)
				start := make(chan struct{})
				var wg sync.WaitGroup
				for _, g := range order {
					wg.Go(func() {
						rev := base + int64(g) + 1
						<-start
						for {
							err := increment(ctx, db, f, level, tok(rev))
							mu.Lock()
							switch {
							case err == nil:
								commits++
								maxC = max(maxC, rev)
							case errors.Is(err, fencing.ErrStale):
								stale++
							case retryable(err):
								retries++
								mu.Unlock()
								continue
							default:
								t.Errorf("token %d: %v", rev, err)
							}
							mu.Unlock()
							return
						}
					})
				}
				close(start)
				wg.Wait()
			}
			t.Logf("%v: %d commits, %d refused as stale, %d retried", level, commits, stale, retries)
			n, last := dataN(t, db)
			var logged int64
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM log").Scan(&logged); err != nil {
				t.Fatal(err)
			}
			rows, err := db.QueryContext(ctx, "SELECT n, token FROM log ORDER BY n")
			if err != nil {
				t.Fatal(err)
			}
			var prevN, prevTok int64
			for rows.Next() {
				var ln, lt int64
				if err := rows.Scan(&ln, &lt); err != nil {
					t.Fatal(err)
				}
				if ln != prevN+1 {
					t.Errorf("increment %d follows %d: an update was lost", ln, prevN)
				}
				if lt < prevTok {
					t.Errorf("token %d committed after token %d", lt, prevTok)
				}
				prevN, prevTok = ln, lt
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if n != logged || last != maxC || last != prevTok {
				t.Errorf("counter %d with token %d; %d increments logged, last with token %d, highest committed %d", n, last, logged, prevTok, maxC)
			}
			if h, err := f.Highest(ctx, db, "invoices"); err != nil || h.Revision != maxC {
				t.Errorf("Highest = %v, %v; want revision %d", h, err, maxC)
			}
		}
	})
}

// TestReadsFenced: a holder whose read was admitted, and who lost the lock
// to a newer holder that wrote, is refused its next read: it cannot
// compute from a value it should not see, nor write its result back.
func TestReadsFenced(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, db *sql.DB, f *sqlfence.Fence) {
		ctx := testCtx(t)
		read := func(t fencing.Token) (int64, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return 0, err
			}
			defer tx.Rollback()
			if err := f.Admit(ctx, tx, "invoices", t); err != nil {
				return 0, err
			}
			var n int64
			if err := tx.QueryRowContext(ctx, "SELECT n FROM data WHERE id = 1").Scan(&n); err != nil {
				return 0, err
			}
			return n, tx.Commit()
		}
		if n, err := read(tok(41)); err != nil || n != 0 {
			t.Fatalf("41 reads %d, %v", n, err)
		}
		if err := increment(ctx, db, f, sql.LevelDefault, tok(42)); err != nil {
			t.Fatal(err)
		}
		if n, err := read(tok(41)); !errors.Is(err, fencing.ErrStale) {
			t.Fatalf("41 reads again after 42 wrote: %d, %v; want fencing.ErrStale", n, err)
		}
		if err := increment(ctx, db, f, sql.LevelDefault, tok(41)); !errors.Is(err, fencing.ErrStale) {
			t.Fatalf("41's read-modify-write: %v, want fencing.ErrStale", err)
		}
		if n, last := dataN(t, db); n != 1 || last != 42 {
			t.Fatalf("counter %d by token %d, want 1 by 42", n, last)
		}
	})
}

// TestLockMismatch: once a resource is fenced by one lock, a token of
// another lock is refused with ErrLockMismatch, newer or older, and the
// record stays as it was.
func TestLockMismatch(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, db *sql.DB, f *sqlfence.Fence) {
		ctx := testCtx(t)
		if err := increment(ctx, db, f, sql.LevelDefault, tok(50)); err != nil {
			t.Fatal(err)
		}
		for _, other := range []fencing.Token{
			{Key: "etcdlock/mutex/reports/0000000000000001-1", Revision: 60},
			{Key: "etcdlock/mutex/reports/0000000000000001-1", Revision: 40},
			{Key: "etcdlock/rw/invoices/r/0000000000000001-1", Revision: 70}, // a read hold
			{Key: "other-namespace/mutex/invoices/0000000000000001-1", Revision: 80},
		} {
			err := increment(ctx, db, f, sql.LevelDefault, other)
			if !errors.Is(err, sqlfence.ErrLockMismatch) || errors.Is(err, fencing.ErrStale) ||
				!strings.Contains(err.Error(), other.LockKey()) || !strings.Contains(err.Error(), "etcdlock/mutex/invoices/") {
				t.Errorf("token %s: %v, want ErrLockMismatch naming both locks", other, err)
			}
		}
		if h, err := f.Highest(ctx, db, "invoices"); err != nil || h != tok(50) {
			t.Fatalf("Highest = %v, %v; want %v", h, err, tok(50))
		}
		if n, last := dataN(t, db); n != 1 || last != 50 {
			t.Fatalf("counter %d by token %d, want 1 by 50", n, last)
		}
	})
}

// TestStore: Store admits in statements of its own, shared by every user
// of the database.
func TestStore(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, db *sql.DB, f *sqlfence.Fence) {
		ctx := testCtx(t)
		s1, s2 := &sqlfence.Store{DB: db, Fence: f}, &sqlfence.Store{DB: db, Fence: f}
		if err := s1.Admit(ctx, "api", tok(10)); err != nil {
			t.Fatal(err)
		}
		if err := s2.Admit(ctx, "api", tok(11)); err != nil {
			t.Fatal(err)
		}
		var se *fencing.StaleError
		if err := s1.Admit(ctx, "api", tok(10)); !errors.As(err, &se) || se.Highest != 11 {
			t.Fatalf("s1 with 10 after s2 with 11: %v, want stale, highest 11", err)
		}
		if err := (&sqlfence.Store{DB: db}).Admit(ctx, "api", tok(12)); !errors.Is(err, sqlfence.ErrInvalid) {
			t.Fatalf("Store without Fence: %v, want ErrInvalid", err)
		}
	})
}

// TestAdmitAfterCancel: a transaction whose context ends while its Admit
// waits for another transaction's record gets ctx's error and writes
// nothing; the other transaction is unaffected.
func TestAdmitAfterCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, db *sql.DB, f *sqlfence.Fence) {
		ctx := testCtx(t)
		holder, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Rollback()
		if err := f.Admit(ctx, holder, "invoices", tok(7)); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancelCause(ctx)
		why := errors.New("caller gave up")
		done := make(chan error, 1)
		go func() {
			tx, err := db.BeginTx(wctx, nil) // SQLite: BEGIN IMMEDIATE waits here
			if err != nil {
				done <- err
				return
			}
			defer tx.Rollback()
			done <- f.Admit(wctx, tx, "invoices", tok(8))
		}()
		waitBlocked(t, b, db)
		cancel(why)
		if err := <-done; err == nil || !(errors.Is(err, why) || errors.Is(err, context.Canceled)) {
			t.Fatalf("Admit whose context ended while waiting: %v, want its cause", err)
		}
		if err := holder.Commit(); err != nil {
			t.Fatalf("the holder's Commit: %v", err)
		}
		if h, err := f.Highest(ctx, db, "invoices"); err != nil || h != tok(7) {
			t.Fatalf("Highest = %v, %v; want %v", h, err, tok(7))
		}
	})
}
