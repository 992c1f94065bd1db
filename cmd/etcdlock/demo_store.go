package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the demo's database: pure Go, no cgo

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
)

// Where the demo's counter lives (demo --store).
const (
	storeSQLite = "sqlite"
	storeMemory = "memory"
)

// sqlTimeout bounds each transaction of the SQLite counter.
const sqlTimeout = 10 * time.Second

// resource is the demo's protected counter: every access, read or write,
// admits the caller's token first, and a stale token gets a
// *fencing.StaleError. Its methods are safe for concurrent use.
type resource interface {
	// read returns the counter if t is admitted.
	read(t fencing.Token) (int, error)
	// write sets the counter to v, counting an accepted increment, if t is
	// admitted.
	write(t fencing.Token, v int) error
	// snapshot returns the counter and the number of accepted increments.
	snapshot() (value, writes int)
	// refuser names what refuses a stale token.
	refuser() string
	// close releases the resource; snapshot still works afterwards.
	close() error
	// String says what the counter is, for the demo's events.
	String() string
}

// newResource returns the counter kept in store.
func newResource(store string) (resource, error) {
	if store == storeMemory {
		return &memCounter{}, nil
	}
	return newSQLCounter()
}

// memCounter is an integer in memory whose every access is admitted by a
// fencing.Fence first.
type memCounter struct {
	fence fencing.Fence

	mu     sync.Mutex
	value  int // the counter
	writes int // increments accepted
}

func (c *memCounter) read(t fencing.Token) (int, error) {
	var v int
	err := c.fence.Do(demoResource, t, func() error {
		c.mu.Lock()
		v = c.value
		c.mu.Unlock()
		return nil
	})
	return v, err
}

func (c *memCounter) write(t fencing.Token, v int) error {
	return c.fence.Do(demoResource, t, func() error {
		c.mu.Lock()
		c.value = v
		c.writes++
		c.mu.Unlock()
		return nil
	})
}

func (c *memCounter) snapshot() (value, writes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.value, c.writes
}

func (c *memCounter) refuser() string { return "the fence" }
func (c *memCounter) close() error    { return nil }
func (c *memCounter) String() string  { return "an integer in memory, fenced by a fencing.Fence" }

// sqlCounter is a row of a SQLite database in a temporary directory; every
// access is a transaction that admits the token with sqlfence first.
type sqlCounter struct {
	dir   string
	db    *sql.DB
	fence *sqlfence.Fence

	mu            sync.Mutex
	closed        bool
	value, writes int // the final counter, once closed
}

func newSQLCounter() (_ *sqlCounter, err error) {
	dir, err := os.MkdirTemp("", "etcdlock-demo")
	if err != nil {
		return nil, err
	}
	c := &sqlCounter{dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
		}
	}()
	// BEGIN IMMEDIATE and a busy timeout, as sqlfence's doc advises.
	if c.db, err = sql.Open("sqlite", "file:"+filepath.Join(dir, "demo.db")+"?_txlock=immediate&_pragma=busy_timeout(10000)"); err != nil {
		return nil, err
	}
	if c.fence, err = sqlfence.New(sqlfence.SQLite, ""); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	if err := c.fence.CreateTable(ctx, c.db); err != nil {
		return nil, err
	}
	if _, err := c.db.ExecContext(ctx, "CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL, writes INTEGER NOT NULL); INSERT INTO counter VALUES (1, 0, 0)"); err != nil {
		return nil, err
	}
	return c, nil
}

// tx runs fn in a transaction that admits t first, and commits it.
func (c *sqlCounter) tx(t fencing.Token, fn func(ctx context.Context, tx *sql.Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := c.fence.Admit(ctx, tx, demoResource, t); err != nil {
		return err
	}
	if err := fn(ctx, tx); err != nil {
		return err
	}
	return tx.Commit()
}

func (c *sqlCounter) read(t fencing.Token) (int, error) {
	var v int
	err := c.tx(t, func(ctx context.Context, tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, "SELECT value FROM counter WHERE id = 1").Scan(&v)
	})
	return v, err
}

func (c *sqlCounter) write(t fencing.Token, v int) error {
	return c.tx(t, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE counter SET value = ?, writes = writes + 1 WHERE id = 1", v)
		return err
	})
}

func (c *sqlCounter) snapshot() (value, writes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.value, c.writes
	}
	v, w, _ := c.query()
	return v, w
}

// query reads the counter and the accepted increments from the database.
func (c *sqlCounter) query() (value, writes int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	err = c.db.QueryRowContext(ctx, "SELECT value, writes FROM counter WHERE id = 1").Scan(&value, &writes)
	return value, writes, err
}

func (c *sqlCounter) refuser() string { return "the database" }

func (c *sqlCounter) String() string {
	return "a row in SQLite database " + filepath.Join(c.dir, "demo.db") + ", each access a transaction fenced by sqlfence"
}

// close keeps the final counter for snapshot, closes the database and
// removes its directory.
func (c *sqlCounter) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.db != nil {
		var err error
		c.value, c.writes, err = c.query()
		if err != nil && c.fence != nil { // a database that never got its table has no counter to read
			errs = append(errs, fmt.Errorf("reading the final counter: %w", err))
		}
		errs = append(errs, c.db.Close())
	}
	errs = append(errs, os.RemoveAll(c.dir))
	return errors.Join(errs...)
}
