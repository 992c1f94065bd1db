package sqlfence_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/lock"
)

// TestPausedHolder, with real holds of a lock.Mutex on an embedded etcd:
// holder 1 writes, then stops (its connection to etcd paused) past its
// lease's TTL; etcd gives the lock to holder 2, which writes. Holder 1
// wakes up and writes with its old token: each database refuses it
// (fencing.ErrStale, naming holder 2's revision), and keeps holder 2's
// write.
func TestPausedHolder(t *testing.T) {
	srv := integration.NewServer(t, integration.WithoutFsync())
	proxy := integration.NewProxy(t, srv.Endpoint())
	cli1, cli2 := proxy.Client(t), srv.Client(t)
	ns := integration.Namespace(t)
	defer integration.RequireEmpty(t, cli2, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	type db struct {
		b  backend
		db *sql.DB
		f  *sqlfence.Fence
	}
	var dbs []db
	for _, b := range backends {
		d := db{b: b, db: b.open(t)}
		var err error
		if d.f, err = sqlfence.New(b.d, "fences"); err != nil {
			t.Fatal(err)
		}
		if err := d.f.CreateTable(ctx, d.db); err != nil {
			t.Fatal(err)
		}
		if _, err := d.db.ExecContext(ctx, "CREATE TABLE balance (id INTEGER PRIMARY KEY, amount BIGINT NOT NULL, by_token BIGINT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		dbs = append(dbs, d)
	}
	// write sets the balance in a transaction fenced by tok.
	write := func(d db, tok fencing.Token, amount int64) error {
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := d.f.Admit(ctx, tx, "ledger", tok); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM balance"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO balance VALUES (1, $1, $2)", amount, tok.Revision); err != nil {
			return err
		}
		return tx.Commit()
	}

	m1, err := lock.NewMutex(cli1, "ledger", lock.WithNamespace(ns), lock.WithTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer m1.Close() // its lease is gone: the error is expected
	m2, err := lock.NewMutex(cli2, "ledger", lock.WithNamespace(ns), lock.WithTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m2.Close(); err != nil {
			t.Error(err)
		}
	}()

	h1, err := m1.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok1 := h1.Token()
	for _, d := range dbs {
		if err := write(d, tok1, 100); err != nil {
			t.Fatalf("%s: holder 1's write while it holds the lock: %v", d.b.name, err)
		}
	}

	proxy.Pause() // holder 1 stops
	select {
	case <-h1.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("holder 1's Done did not close within 30 s of pausing it")
	}
	h2, err := m2.Lock(ctx) // granted once etcd expires holder 1's lease
	if err != nil {
		t.Fatal(err)
	}
	tok2 := h2.Token()
	if tok2.Revision <= tok1.Revision || tok2.LockKey() != tok1.LockKey() {
		t.Fatalf("holder 2's token %s after holder 1's %s", tok2, tok1)
	}
	for _, d := range dbs {
		if err := write(d, tok2, 200); err != nil {
			t.Fatalf("%s: holder 2's write: %v", d.b.name, err)
		}
	}
	proxy.Unpause() // holder 1 wakes up and carries on

	for _, d := range dbs {
		var se *fencing.StaleError
		err := write(d, tok1, 0)
		if !errors.Is(err, fencing.ErrStale) || !errors.As(err, &se) || se.Highest != tok2.Revision || se.Token != tok1 {
			t.Errorf("%s: the paused holder's write = %v, want a StaleError with highest %d", d.b.name, err, tok2.Revision)
		}
		var amount, by int64
		if err := d.db.QueryRowContext(ctx, "SELECT amount, by_token FROM balance").Scan(&amount, &by); err != nil {
			t.Fatal(err)
		}
		if amount != 200 || by != tok2.Revision {
			t.Errorf("%s: balance %d by token %d, want 200 by %d", d.b.name, amount, by, tok2.Revision)
		}
	}
	if err := h2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.Unlock(ctx); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("holder 1's Unlock = %v, want lock.ErrNotHeld", err)
	}
}
