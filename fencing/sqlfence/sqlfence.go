package sqlfence

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/etcdlock/etcdlock/fencing"
)

var (
	// ErrLockMismatch is returned by Admit for a token whose lock
	// (fencing.Token.LockKey) is not the lock recorded for the resource:
	// the resource is guarded by two different locks, whose revisions
	// cannot be compared.
	ErrLockMismatch = errors.New("sqlfence: resource is fenced by another lock")
	// ErrInvalid is returned for an empty, oversized or non-UTF-8 resource
	// or table name, a token that is not a grant's (no positive revision,
	// or a key without a lock prefix), and a nil transaction or database.
	ErrInvalid = errors.New("sqlfence: invalid argument")
)

// DefaultTable is the table name New uses for an empty one.
const DefaultTable = "etcdlock_fence"

// MaxResourceLen is the longest resource name, in bytes.
const MaxResourceLen = 1024

// maxKeyLen bounds a token's key: etcdlock's longest is a 256-byte
// namespace, an escaped 512-byte name (3 bytes per escaped byte) and a
// short holder part.
const maxKeyLen = 2048

// Dialect is the SQL dialect of a database: PostgreSQL or SQLite.
type Dialect struct {
	name string
	// ph returns the placeholder of the n-th argument, from 1.
	ph func(n int) string
}

var (
	// PostgreSQL is the dialect of PostgreSQL 9.5 and later.
	PostgreSQL = Dialect{name: "postgresql", ph: func(n int) string { return "$" + strconv.Itoa(n) }}
	// SQLite is the dialect of SQLite 3.35 and later.
	SQLite = Dialect{name: "sqlite", ph: func(int) string { return "?" }}
)

// String returns the dialect's name.
func (d Dialect) String() string { return d.name }

// Fence records, in a table of the caller's database, the highest fencing
// token admitted for each resource, and refuses lower ones inside the
// caller's transactions. A Fence holds no connection and no state besides
// its statements; it is safe for concurrent use.
type Fence struct {
	d      Dialect
	table  string
	admit  string // the conditional upsert, returning the revision on success
	read   string // the recorded lock key, revision and token key
	schema []string
}

// identifier matches a table name that needs no quoting: an identifier,
// optionally qualified by a schema.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,50}(\.[A-Za-z_][A-Za-z0-9_]{0,50})?$`)

// New returns a Fence for dialect d keeping its records in table (created
// by CreateTable or the DDL of Schema), DefaultTable if table is "". The
// name is used unquoted: letters, digits and '_', at most 51 bytes, with
// an optional "schema." before it. New does no I/O; it returns an error
// matching ErrInvalid for another name or a zero Dialect.
func New(d Dialect, table string) (*Fence, error) {
	if d.ph == nil {
		return nil, fmt.Errorf("%w: no dialect", ErrInvalid)
	}
	if table == "" {
		table = DefaultTable
	}
	if !identifier.MatchString(table) {
		return nil, fmt.Errorf("%w: table name %q (want letters, digits and _, up to 51 bytes, optionally schema.table)", ErrInvalid, table)
	}
	p := d.ph
	f := &Fence{d: d, table: table}
	// One statement decides: it inserts the resource's first record, or
	// updates the record only if the token is not older and of the same
	// lock. The conflicting row is locked whether or not the update
	// happens (PostgreSQL's ON CONFLICT DO UPDATE locks it; SQLite has one
	// writer), so a concurrent admission waits for this transaction to
	// end, and then sees its record.
	f.admit = fmt.Sprintf(`INSERT INTO %[1]s AS f (resource, lock_key, revision, token_key) VALUES (%[2]s, %[3]s, %[4]s, %[5]s)
ON CONFLICT (resource) DO UPDATE SET revision = excluded.revision, token_key = excluded.token_key
WHERE f.revision <= excluded.revision AND f.lock_key = excluded.lock_key
RETURNING revision`, table, p(1), p(2), p(3), p(4))
	f.read = fmt.Sprintf("SELECT lock_key, revision, token_key FROM %s WHERE resource = %s", table, p(1))
	f.schema = []string{fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	resource  TEXT PRIMARY KEY,
	lock_key  TEXT NOT NULL,
	revision  BIGINT NOT NULL,
	token_key TEXT NOT NULL
)`, table)}
	if d.name == PostgreSQL.name {
		f.schema = append(f.schema, pgFunction(table))
	}
	return f, nil
}

// Table returns the name of the fence's table.
func (f *Fence) Table() string { return f.table }

// Schema returns the DDL that CreateTable runs: the table, and for
// PostgreSQL the function <table>_admit(resource, token_key, revision) for
// programs that are not Go (see the package doc). Each statement is
// idempotent (IF NOT EXISTS, OR REPLACE).
func (f *Fence) Schema() []string { return append([]string(nil), f.schema...) }

// CreateTable runs Schema's statements on db, in one transaction. Run it
// once, at deployment or start: on PostgreSQL, two CreateTables at the
// same moment can fail with a unique or concurrent-update error. It blocks
// for the statements; ctx ends the wait with its error.
func (f *Fence) CreateTable(ctx context.Context, db *sql.DB) error {
	if db == nil {
		return fmt.Errorf("%w: nil database", ErrInvalid)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, s := range f.schema {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("sqlfence: creating %s: %w", f.table, err)
		}
	}
	return tx.Commit()
}

// Admit checks t against the highest token recorded for resource and
// records it, inside tx, before the caller's reads and writes of the
// resource. It passes a token at least as new as the recorded one (the same
// hold may admit again) from the same lock, or the first token of a
// resource. Otherwise it returns a *fencing.StaleError (errors.Is
// fencing.ErrStale, with the highest revision recorded) or an error
// matching ErrLockMismatch.
//
// On every error Admit rolls tx back, so that nothing the transaction wrote
// can commit; the caller's Commit then returns sql.ErrTxDone. Errors are
// ErrInvalid (nothing sent), ctx's cause (nothing sent if ctx had ended),
// sql.ErrTxDone for a transaction already over, and the database's, such
// as a PostgreSQL serialization failure (SQLSTATE 40001) under
// SERIALIZABLE, after which the caller retries the whole transaction.
//
// It takes one statement when t passes, and a second to tell why when it
// does not. It blocks while another transaction holds the resource's
// record, until that one ends: admissions of a resource are serialized.
// Safe for concurrent use on different transactions.
func (f *Fence) Admit(ctx context.Context, tx *sql.Tx, resource string, t fencing.Token) error {
	if tx == nil {
		return fmt.Errorf("%w: nil transaction", ErrInvalid)
	}
	err := f.admitOn(ctx, tx, resource, t)
	if err != nil {
		tx.Rollback() // an error from a transaction already over is no news
	}
	return err
}

// querier runs a statement returning one row: a *sql.Tx or *sql.DB.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// admitOn is Admit on q: in a transaction, or as a statement of its own.
func (f *Fence) admitOn(ctx context.Context, q querier, resource string, t fencing.Token) error {
	lock, err := check(resource, t)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var got int64
	err = q.QueryRowContext(ctx, f.admit, resource, lock, t.Revision, t.Key).Scan(&got)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return f.fail(ctx, err)
	}
	// Refused: one more statement to say why, off the fast path. The record
	// is locked by the statement above, in a transaction; on its own, it
	// may have moved since, but only forward.
	var recLock, recKey string
	var rev int64
	if err := q.QueryRowContext(ctx, f.read, resource).Scan(&recLock, &rev, &recKey); err != nil {
		return f.fail(ctx, err)
	}
	if recLock != lock {
		return fmt.Errorf("%w: %q is fenced by lock %q (token %d@%s), not by %q (token %s)",
			ErrLockMismatch, resource, recLock, rev, recKey, lock, t)
	}
	return &fencing.StaleError{Resource: resource, Token: t, Highest: rev}
}

// fail returns ctx's cause if ctx ended (the statement's error is then
// the driver's report of it), else err.
func (f *Fence) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("sqlfence: %w (%v)", context.Cause(ctx), err)
	}
	return fmt.Errorf("sqlfence: %w", err)
}

// check validates Admit's input and returns t's lock key.
func check(resource string, t fencing.Token) (string, error) {
	switch {
	case resource == "":
		return "", fmt.Errorf("%w: empty resource", ErrInvalid)
	case len(resource) > MaxResourceLen:
		return "", fmt.Errorf("%w: resource of %d bytes, more than %d", ErrInvalid, len(resource), MaxResourceLen)
	case !utf8.ValidString(resource) || strings.IndexByte(resource, 0) >= 0:
		return "", fmt.Errorf("%w: resource is not UTF-8 text", ErrInvalid)
	case t.Revision <= 0:
		return "", fmt.Errorf("%w: token %s has no revision: not a grant's token", ErrInvalid, t)
	case len(t.Key) > maxKeyLen || !utf8.ValidString(t.Key) || strings.IndexByte(t.Key, 0) >= 0:
		return "", fmt.Errorf("%w: token key is not an etcdlock key", ErrInvalid)
	}
	lock := t.LockKey()
	if lock == "" || lock == t.Key {
		return "", fmt.Errorf("%w: token key %q has no lock prefix and holder part: not a grant's token", ErrInvalid, t.Key)
	}
	return lock, nil
}

// Highest returns the token recorded for resource, the zero Token if
// none. q is a *sql.DB, *sql.Tx or *sql.Conn. One statement; it does not
// lock the record. Errors are ErrInvalid for an empty resource, ctx's and
// the database's.
func (f *Fence) Highest(ctx context.Context, q querier, resource string) (fencing.Token, error) {
	if resource == "" {
		return fencing.Token{}, fmt.Errorf("%w: empty resource", ErrInvalid)
	}
	var lock string
	var t fencing.Token
	err := q.QueryRowContext(ctx, f.read, resource).Scan(&lock, &t.Revision, &t.Key)
	if errors.Is(err, sql.ErrNoRows) {
		return fencing.Token{}, nil
	}
	if err != nil {
		return fencing.Token{}, f.fail(ctx, err)
	}
	return t, nil
}

// Store admits tokens in a database of its own, each admission committed
// at once: a high-water mark shared by every process using the database,
// such as the replicas of a service behind httpfence. It does not order
// the accesses that follow an admission; fence data kept in the same
// database with Fence.Admit in its own transaction instead.
//
// DB and Fence must be set. A Store is safe for concurrent use.
type Store struct {
	DB    *sql.DB
	Fence *Fence
}

// Admit admits t for resource as Fence.Admit does, with the same errors,
// in one statement of its own (atomic without a transaction; a second
// statement says why a token is refused).
func (s *Store) Admit(ctx context.Context, resource string, t fencing.Token) error {
	if s.DB == nil || s.Fence == nil {
		return fmt.Errorf("%w: Store without DB or Fence", ErrInvalid)
	}
	return s.Fence.admitOn(ctx, s.DB, resource, t)
}
