package sqlfence_test

import (
	"bytes"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
	"github.com/etcdlock/etcdlock/integration/pgtest"
)

// The job and command of the package doc, as `etcdlock run` would run
// them (with $ETCDLOCK_KEY and $ETCDLOCK_TOKEN set).
const (
	psqlJob = `SELECT etcdlock_fence_admit('invoices', :'key', :'token');
UPDATE invoices SET state = 'sent' WHERE state = 'due';
`
	psqlCmd = `exec psql -X -v ON_ERROR_STOP=1 --single-transaction -v key="$ETCDLOCK_KEY" -v token="$ETCDLOCK_TOKEN" -f job.sql`
)

// TestPsqlFunction: the PostgreSQL function that the DDL installs fences a
// psql job's writes as Admit does, and shares its records with Admit: a
// stale job, one of another lock and one with no token fail (psql exits
// with status 3) and their UPDATE is rolled back.
func TestPsqlFunction(t *testing.T) {
	srv := pgtest.Shared(t)
	ctx := testCtx(t)
	name, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", srv.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f, err := sqlfence.New(sqlfence.PostgreSQL, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CreateTable(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE invoices (id int PRIMARY KEY, state text NOT NULL); INSERT INTO invoices VALUES (1, 'due'), (2, 'due')"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "job.sql"), []byte(psqlJob), 0o644); err != nil {
		t.Fatal(err)
	}
	psql := "psql"
	if bindir, err := pgtest.BinDir(); err == nil {
		psql = filepath.Join(bindir, "psql")
	}
	// job runs the job with the token's key and revision in its environment,
	// and returns psql's exit status and stderr, and how many invoices it
	// sent. It resets the invoices to due first.
	job := func(key, token string) (int, string, int) {
		t.Helper()
		if _, err := db.ExecContext(ctx, "UPDATE invoices SET state = 'due'"); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, "sh", "-c", strings.Replace(psqlCmd, "exec psql", "exec "+psql, 1))
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PGHOST="+srv.Dir(), "PGUSER="+pgtest.User, "PGDATABASE="+name,
			"ETCDLOCK_KEY="+key, "ETCDLOCK_TOKEN="+token)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		status := 0
		var ee *exec.ExitError
		if err := cmd.Run(); errors.As(err, &ee) {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		var sent int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM invoices WHERE state = 'sent'").Scan(&sent); err != nil {
			t.Fatal(err)
		}
		return status, stderr.String(), sent
	}
	k := tok(1).Key
	for _, c := range []struct {
		name, key, token string
		status           int
		stderr           string
	}{
		{"current", k, "42", 0, ""},
		{"again", k, "42", 0, ""},
		{"stale", k, "41", 3, "stale token 41@" + k + " for invoices: highest admitted is 42"},
		{"other lock", "etcdlock/rw/reports/w/0001-1", "43", 3, "invoices is fenced by lock etcdlock/mutex/invoices/"},
		{"no token", k, "", 3, "invalid input syntax"},
		{"zero token", k, "0", 3, "is not a grant's token"},
		{"no key", "", "44", 3, "is not a grant's token"},
	} {
		status, stderr, sent := job(c.key, c.token)
		wantSent := 2
		if c.status != 0 {
			wantSent = 0
		}
		if status != c.status || !strings.Contains(stderr, c.stderr) || sent != wantSent {
			t.Errorf("%s job: status %d, %d invoices sent, stderr %q; want status %d, %d sent, stderr with %q",
				c.name, status, sent, stderr, c.status, wantSent, c.stderr)
		}
	}

	// Go's Admit and the function share the record.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var se *fencing.StaleError
	if err := f.Admit(ctx, tx, "invoices", tok(41)); !errors.As(err, &se) || se.Highest != 42 {
		t.Errorf("Admit of 41 after the job's 42 = %v, want stale, highest 42", err)
	}
	if status, stderr, _ := job(k, strconv.Itoa(50)); status != 0 {
		t.Fatalf("job with 50: status %d: %s", status, stderr)
	}
	if h, err := f.Highest(ctx, db, "invoices"); err != nil || h.Revision != 50 || h.Key != k {
		t.Errorf("Highest after the job with 50 = %v, %v", h, err)
	}
}
