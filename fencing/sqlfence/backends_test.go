package sqlfence_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/integration/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m, integration.GoleakOptions()...) }

// backend is a real database the tests run against.
type backend struct {
	name string
	d    sqlfence.Dialect
	open func(t *testing.T) *sql.DB // a fresh, empty database
	// isolation levels to test concurrency at
	levels []sql.IsolationLevel
}

var backends = []backend{
	{
		name:   "postgresql",
		d:      sqlfence.PostgreSQL,
		open:   func(t *testing.T) *sql.DB { return pgtest.Shared(t).DB(t) },
		levels: []sql.IsolationLevel{sql.LevelReadCommitted, sql.LevelRepeatableRead, sql.LevelSerializable},
	},
	{
		name:   "sqlite",
		d:      sqlfence.SQLite,
		open:   openSQLite,
		levels: []sql.IsolationLevel{sql.LevelDefault}, // SQLite is serializable; the driver ignores the level
	},
}

// openSQLite opens a new SQLite database file as the package doc advises:
// BEGIN IMMEDIATE, and a busy timeout so writers wait for each other.
func openSQLite(t *testing.T) *sql.DB {
	path := filepath.Join(t.TempDir(), "fence.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_txlock=immediate&_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// eachBackend runs fn as a subtest for each backend, with a fresh database
// holding the fence's table and a data table.
func eachBackend(t *testing.T, fn func(t *testing.T, b backend, db *sql.DB, f *sqlfence.Fence)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			db := b.open(t)
			f := newFence(t, b, db)
			ctx := testCtx(t)
			for _, s := range []string{
				"CREATE TABLE data (id INTEGER PRIMARY KEY, n BIGINT NOT NULL, token BIGINT NOT NULL)",
				"CREATE TABLE log (n BIGINT PRIMARY KEY, token BIGINT NOT NULL)",
				"INSERT INTO data VALUES (1, 0, 0)",
			} {
				if _, err := db.ExecContext(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			fn(t, b, db, f)
		})
	}
}

// newFence returns a Fence of b's dialect with its table created in db.
func newFence(t *testing.T, b backend, db *sql.DB) *sqlfence.Fence {
	f, err := sqlfence.New(b.d, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CreateTable(testCtx(t), db); err != nil {
		t.Fatal(err)
	}
	return f
}

// testCtx returns a context that ends at the test's end, or after a minute.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// retryable reports whether err is the database refusing a transaction
// that the caller retries as a whole: a serialization failure or deadlock
// (PostgreSQL) or SQLITE_BUSY.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqlite3.SQLITE_BUSY
	}
	return false
}

// tok returns a token of lock "etcdlock/mutex/invoices/" with revision rev.
func tok(rev int64) fencing.Token {
	return fencing.Token{Key: "etcdlock/mutex/invoices/00000000000000" + string(rune('a'+rev%26)) + "-1", Revision: rev}
}

// dataN returns data's counter and last token.
func dataN(t *testing.T, db *sql.DB) (n, token int64) {
	t.Helper()
	if err := db.QueryRowContext(testCtx(t), "SELECT n, token FROM data WHERE id = 1").Scan(&n, &token); err != nil {
		t.Fatal(err)
	}
	return n, token
}

// increment is one fenced read-modify-write of the data row in a
// transaction at level: Admit, read the counter, log the increment, write
// it, commit. It returns Admit's or the database's error.
func increment(ctx context.Context, db *sql.DB, f *sqlfence.Fence, level sql.IsolationLevel, t fencing.Token) error {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: level})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f.Admit(ctx, tx, "invoices", t); err != nil {
		return err
	}
	var n int64
	if err := tx.QueryRowContext(ctx, "SELECT n FROM data WHERE id = 1").Scan(&n); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO log (n, token) VALUES ($1, $2)", n+1, t.Revision); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE data SET n = $1, token = $2 WHERE id = 1", n+1, t.Revision); err != nil {
		return err
	}
	return tx.Commit()
}

// waitBlocked waits, for up to 30 s, until a PostgreSQL session waits for
// a lock: another transaction's Admit. SQLite shows no such thing; the
// caller goes on at once, and its test then covers a cancellation before
// or during the wait.
func waitBlocked(t *testing.T, b backend, db *sql.DB) {
	t.Helper()
	if b.name != "postgresql" {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		err := db.QueryRowContext(testCtx(t),
			"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no session waited for the record's lock within 30 s")
}
