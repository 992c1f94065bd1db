package sqlfence_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/integration/pgtest"
)

// countingConnector opens connections of pgx's database/sql driver that
// count the statements they send to the real server.
type countingConnector struct {
	dsn        string
	statements atomic.Int64
}

func (c *countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := stdlib.GetDefaultDriver().Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &countingConn{conn.(pgxConn), &c.statements}, nil
}

func (c *countingConnector) Driver() driver.Driver { return stdlib.GetDefaultDriver() }

// pgxConn is what database/sql uses of a pgx connection.
type pgxConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.QueryerContext
	driver.ExecerContext
}

type countingConn struct {
	pgxConn
	n *atomic.Int64
}

func (c *countingConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	c.n.Add(1)
	return c.pgxConn.QueryContext(ctx, q, args)
}

func (c *countingConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	c.n.Add(1)
	return c.pgxConn.ExecContext(ctx, q, args)
}

// TestAdmitRoundTrips counts the statements Admit sends to PostgreSQL: one
// for a token that passes, a second, to say why, for one refused; none for
// bad input.
func TestAdmitRoundTrips(t *testing.T) {
	srv := pgtest.Shared(t)
	ctx := testCtx(t)
	name, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConnector{dsn: srv.DSN(name)}
	db := sql.OpenDB(cc)
	defer db.Close()
	f := newFence(t, backends[0], db)
	admit := func(tk fencing.Token) (int64, error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		before := cc.statements.Load()
		err = f.Admit(ctx, tx, "invoices", tk)
		n := cc.statements.Load() - before
		if err == nil {
			err = tx.Commit()
		}
		return n, err
	}
	for _, c := range []struct {
		tk   fencing.Token
		want int64
		err  error
	}{
		{tok(10), 1, nil},
		{tok(11), 1, nil},
		{tok(11), 1, nil},
		{tok(10), 2, fencing.ErrStale},
		{fencing.Token{}, 0, errAny},
	} {
		n, err := admit(c.tk)
		if n != c.want || (c.err == nil) != (err == nil) || (c.err != nil && c.err != errAny && !errors.Is(err, c.err)) {
			t.Errorf("Admit(%s): %d statements, %v; want %d, %v", c.tk, n, err, c.want, c.err)
		}
	}
}

var errAny = errors.New("any error")
