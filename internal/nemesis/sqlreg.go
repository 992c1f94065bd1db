package nemesis

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
)

// sqlDB is a run's SQLite database, in a file of its own in a temporary
// directory that close removes. It holds the fence's table and a table of
// counters, one row per SQL workload of each phase.
type sqlDB struct {
	db    *sql.DB
	dir   string
	fence *sqlfence.Fence
}

// sqlTimeout bounds one transaction of a SQL workload, its waits for
// SQLite's write lock included.
const sqlTimeout = 5 * time.Second

// openSQL creates the run's database as sqlfence's doc advises for SQLite:
// BEGIN IMMEDIATE, so that a transaction takes the write lock before its
// Admit, and a busy timeout, so that writers wait for each other.
func openSQL(ctx context.Context) (_ *sqlDB, err error) {
	dir, err := os.MkdirTemp("", "etcdlock-nemesis-sql-")
	if err != nil {
		return nil, err
	}
	s := &sqlDB{dir: dir}
	defer func() {
		if err != nil {
			_ = s.close()
		}
	}()
	dsn := "file:" + filepath.Join(dir, "nemesis.db") +
		fmt.Sprintf("?_txlock=immediate&_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)", sqlTimeout.Milliseconds())
	if s.db, err = sql.Open("sqlite", dsn); err != nil {
		return nil, err
	}
	// Keep the workers' connections open between transactions.
	s.db.SetMaxIdleConns(16)
	if s.fence, err = sqlfence.New(sqlfence.SQLite, ""); err != nil {
		return nil, err
	}
	if err := s.fence.CreateTable(ctx, s.db); err != nil {
		return nil, err
	}
	if _, err := s.db.ExecContext(ctx, "CREATE TABLE counter (name TEXT PRIMARY KEY, n BIGINT NOT NULL)"); err != nil {
		return nil, fmt.Errorf("nemesis: creating the counter table: %w", err)
	}
	return s, nil
}

// close closes the database and removes its directory.
func (s *sqlDB) close() error {
	var err error
	if s.db != nil {
		err = s.db.Close()
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// sqlRegister is a SQL workload's counter: a row of the counter table,
// fenced by sqlfence under the same name, or not at all (the control).
type sqlRegister struct {
	db    *sql.DB
	fence *sqlfence.Fence // nil: unfenced
	name  string          // the counter's row, and the fence's resource
}

func (r *sqlRegister) create(ctx context.Context) error {
	_, err := r.db.ExecContext(ctx, "INSERT INTO counter (name, n) VALUES (?, 0)", r.name)
	return err
}

// final returns the counter's value.
func (r *sqlRegister) final(ctx context.Context) (int64, error) {
	var n int64
	err := r.db.QueryRowContext(ctx, "SELECT n FROM counter WHERE name = ?", r.name).Scan(&n)
	return n, err
}

// sqlAttempts is how many times an access runs its transaction when
// SQLite refuses it as busy.
const sqlAttempts = 3

// access reads the counter, or writes v to it, in a transaction of its
// own that the fenced register opens with Admit(tok). Its outcome is OK,
// Rejected (Admit refused tok), Unknown (Commit failed: the transaction
// may have committed) or aborted (it failed before Commit, so nothing took
// effect). A read and the write that follows it are two transactions, as
// a holder that computes between them would not keep SQLite's one write
// lock meanwhile: the write's Admit, not the database's locking, must
// refuse a holder that paused in between.
func (r *sqlRegister) access(ctx context.Context, tok fencing.Token, write bool, v int64) (int64, Outcome) {
	for attempt := 1; ; attempt++ {
		n, st, err := r.tx(ctx, tok, write, v)
		if st != aborted || attempt == sqlAttempts || !sqlBusy(err) || ctx.Err() != nil {
			return n, st
		}
	}
}

// tx is one attempt of access; err is why it was aborted.
func (r *sqlRegister) tx(ctx context.Context, tok fencing.Token, write bool, v int64) (int64, Outcome, error) {
	tctx, cancel := context.WithTimeout(ctx, sqlTimeout)
	defer cancel()
	tx, err := r.db.BeginTx(tctx, nil)
	if err != nil {
		return 0, aborted, err
	}
	defer tx.Rollback()
	if r.fence != nil {
		err := r.fence.Admit(tctx, tx, r.name, tok)
		if errors.Is(err, fencing.ErrStale) || errors.Is(err, sqlfence.ErrLockMismatch) {
			return 0, Rejected, nil
		}
		if err != nil {
			return 0, aborted, err
		}
	}
	if write {
		res, err := tx.ExecContext(tctx, "UPDATE counter SET n = ? WHERE name = ?", v, r.name)
		if err != nil {
			return 0, aborted, err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return 0, aborted, fmt.Errorf("nemesis: counter %q: %d rows updated (%v)", r.name, n, err)
		}
	} else if err := tx.QueryRowContext(tctx, "SELECT n FROM counter WHERE name = ?", r.name).Scan(&v); err != nil {
		return 0, aborted, err
	}
	if err := tx.Commit(); err != nil {
		return 0, Unknown, err
	}
	return v, OK, nil
}

// sqlBusy reports whether err is SQLite refusing a transaction that is
// retried as a whole: SQLITE_BUSY.
func sqlBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// aborted is the outcome of a SQL access that failed before its commit:
// it took no effect and is not recorded.
const aborted Outcome = "aborted"
