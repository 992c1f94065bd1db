package sqlfence_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
)

// TestBadInput: an empty, oversized or non-UTF-8 resource, a token that is
// not a grant's, a nil, finished or committed transaction and an ended
// context each get a clear, matchable error; the transaction is rolled
// back, so what it wrote before is gone, and the fence records nothing.
func TestBadInput(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend, db *sql.DB, f *sqlfence.Fence) {
		ctx := testCtx(t)
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		why := errors.New("caller gave up")
		withCause, cancel2 := context.WithCancelCause(ctx)
		cancel2(why)
		good := tok(3)
		cases := []struct {
			name     string
			ctx      context.Context
			resource string
			tok      fencing.Token
			want     error
		}{
			{"empty resource", ctx, "", good, sqlfence.ErrInvalid},
			{"oversized resource", ctx, strings.Repeat("r", sqlfence.MaxResourceLen+1), good, sqlfence.ErrInvalid},
			{"resource not UTF-8", ctx, "r\xff", good, sqlfence.ErrInvalid},
			{"resource with NUL", ctx, "r\x00", good, sqlfence.ErrInvalid},
			{"zero token", ctx, "r", fencing.Token{}, sqlfence.ErrInvalid},
			{"no revision", ctx, "r", fencing.Token{Key: good.Key}, sqlfence.ErrInvalid},
			{"negative revision", ctx, "r", fencing.Token{Key: good.Key, Revision: -3}, sqlfence.ErrInvalid},
			{"no key", ctx, "r", fencing.Token{Revision: 3}, sqlfence.ErrInvalid},
			{"key without lock prefix", ctx, "r", fencing.Token{Key: "holder", Revision: 3}, sqlfence.ErrInvalid},
			{"key without holder part", ctx, "r", fencing.Token{Key: "etcdlock/mutex/r/", Revision: 3}, sqlfence.ErrInvalid},
			{"oversized key", ctx, "r", fencing.Token{Key: strings.Repeat("k/", 2000) + "1", Revision: 3}, sqlfence.ErrInvalid},
			{"cancelled context", cancelled, "r", good, context.Canceled},
			{"cancelled with cause", withCause, "r", good, why},
		}
		for _, c := range cases {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, "UPDATE data SET n = 99 WHERE id = 1"); err != nil {
				t.Fatal(err)
			}
			if err := f.Admit(c.ctx, tx, c.resource, c.tok); !errors.Is(err, c.want) {
				t.Errorf("%s: Admit = %v, want %v", c.name, err, c.want)
			}
			if err := tx.Commit(); !errors.Is(err, sql.ErrTxDone) {
				t.Errorf("%s: Commit after the refusal = %v, want sql.ErrTxDone", c.name, err)
			}
		}

		// A transaction already over.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := f.Admit(ctx, tx, "r", good); !errors.Is(err, sql.ErrTxDone) {
			t.Errorf("Admit on a committed transaction = %v, want sql.ErrTxDone", err)
		}
		if err := f.Admit(ctx, nil, "r", good); !errors.Is(err, sqlfence.ErrInvalid) {
			t.Errorf("Admit on a nil transaction = %v, want ErrInvalid", err)
		}
		if _, err := f.Highest(ctx, db, ""); !errors.Is(err, sqlfence.ErrInvalid) {
			t.Errorf("Highest of an empty resource = %v, want ErrInvalid", err)
		}
		if err := f.CreateTable(ctx, nil); !errors.Is(err, sqlfence.ErrInvalid) {
			t.Errorf("CreateTable on a nil database = %v, want ErrInvalid", err)
		}

		if n, _ := dataN(t, db); n != 0 {
			t.Errorf("data written by refused transactions: n = %d", n)
		}
		var records int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM "+f.Table()).Scan(&records); err != nil || records != 0 {
			t.Errorf("%d records after refused admissions (%v), want none", records, err)
		}
	})
}

// TestNewBadTable: New takes only table names it can use unquoted.
func TestNewBadTable(t *testing.T) {
	for _, name := range []string{"a b", "1abc", "t;DROP TABLE x", `"t"`, "a.b.c", "a.", strings.Repeat("t", 52), "tü"} {
		if _, err := sqlfence.New(sqlfence.PostgreSQL, name); !errors.Is(err, sqlfence.ErrInvalid) {
			t.Errorf("New(%q) = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := sqlfence.New(sqlfence.Dialect{}, "t"); !errors.Is(err, sqlfence.ErrInvalid) {
		t.Errorf("New with a zero Dialect = %v, want ErrInvalid", err)
	}
	for _, name := range []string{"", "fences", "app.fences", "_T1", strings.Repeat("t", 51)} {
		f, err := sqlfence.New(sqlfence.SQLite, name)
		if err != nil {
			t.Errorf("New(%q) = %v", name, err)
			continue
		}
		if name == "" && f.Table() != sqlfence.DefaultTable {
			t.Errorf("New(\"\").Table() = %q", f.Table())
		}
	}
}
