package sqlfence_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // the "sqlite" driver: pure Go

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
)

// Admit runs first in each transaction that reads or writes the resource.
// A holder whose lock passed to someone else while it was paused is refused
// by the database, and its transaction writes nothing. (The tokens would
// come from lock.Hold.Token.)
func ExampleFence_Admit() {
	dir, err := os.MkdirTemp("", "sqlfence")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_txlock=immediate&_pragma=busy_timeout(5000)")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	fence, err := sqlfence.New(sqlfence.SQLite, "")
	if err != nil {
		log.Fatal(err)
	}
	if err := fence.CreateTable(ctx, db); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE balance (amount INTEGER)"); err != nil {
		log.Fatal(err)
	}

	// setBalance is a critical section: fenced, then write.
	setBalance := func(token fencing.Token, amount int) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := fence.Admit(ctx, tx, "balance", token); err != nil {
			return err // tx is rolled back already
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM balance"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO balance VALUES (?)", amount); err != nil {
			return err
		}
		return tx.Commit()
	}

	paused := fencing.Token{Key: "etcdlock/mutex/balance/694d7a3c1e2f0a11-1", Revision: 17}
	current := fencing.Token{Key: "etcdlock/mutex/balance/694d7a3c1e2f0b42-1", Revision: 23}
	fmt.Println(setBalance(paused, 100))  // before its pause
	fmt.Println(setBalance(current, 200)) // the lock's next holder
	err = setBalance(paused, 0)           // the paused holder wakes up
	fmt.Println(errors.Is(err, fencing.ErrStale))
	fmt.Println(err)

	var amount int
	if err := db.QueryRowContext(ctx, "SELECT amount FROM balance").Scan(&amount); err != nil {
		log.Fatal(err)
	}
	fmt.Println("balance:", amount)
	// Output:
	// <nil>
	// <nil>
	// true
	// fencing: stale token 17@etcdlock/mutex/balance/694d7a3c1e2f0a11-1 for "balance": highest admitted is 23
	// balance: 200
}
