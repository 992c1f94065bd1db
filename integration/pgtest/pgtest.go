// Package pgtest runs throwaway PostgreSQL servers for tests: initdb and
// pg_ctl into a temporary directory, listening on a unix socket only, with
// fsync off, stopped and removed at cleanup. It is for the tests of this
// module and of its users; it needs PostgreSQL's server binaries (Debian and
// Ubuntu: apt-get install postgresql) but no running server and no
// configuration.
//
// The binaries are looked for in $PGTEST_BINDIR, then in the directory
// `pg_config --bindir` names, then in /usr/lib/postgresql/*/bin (the
// newest version first). When run as root, the server runs as the
// unprivileged user "postgres" (which Debian's package creates) or, failing
// that, "nobody": PostgreSQL refuses to run as root.
//
// A test whose binaries are missing is skipped with a message saying how
// to install them, or fails instead when $CI is "true", so that CI never
// passes by skipping.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		db := pgtest.Shared(t).DB(t) // a fresh database of its own
//		// ...
//	}
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"go.uber.org/goleak"
)

// ErrNotInstalled is returned by Start when PostgreSQL's server binaries
// are not found.
var ErrNotInstalled = errors.New("pgtest: PostgreSQL server binaries not found (install them: apt-get install postgresql, or set PGTEST_BINDIR)")

// User is the superuser of the servers, to which clients connect without a
// password.
const User = "etcdlock"

// startTimeout bounds initdb and the server's start and stop.
const startTimeout = 60 * time.Second

// Server is one running PostgreSQL server. Its methods are safe for
// concurrent use.
type Server struct {
	dir    string // the temporary directory: data in dir/data, socket in dir
	bindir string
	cred   *syscall.Credential // nil unless run as root
	dbs    atomic.Int64        // databases made by DB

	closeOnce sync.Once
	closeErr  error
}

// Start initializes and starts a server in a new temporary directory. The
// caller must Close it. It blocks until the server accepts connections
// (about a second), and returns ErrNotInstalled when the binaries are
// missing.
func Start() (*Server, error) {
	bindir, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bindir: bindir}
	if os.Geteuid() == 0 {
		if s.cred, err = unprivileged(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	data := filepath.Join(dir, "data")
	if err := s.run(ctx, "initdb", "-D", data, "-U", User, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	opts := "-c listen_addresses= -c unix_socket_directories=" + dir +
		" -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
	if err := s.run(ctx, "pg_ctl", "start", "-w", "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts); err != nil {
		s.run(ctx, "pg_ctl", "stop", "-m", "immediate", "-D", data) // it may have started before failing
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// New starts a server for tb and closes it at tb's cleanup. It skips tb
// when the binaries are missing, or fails it if $CI is "true".
func New(tb testing.TB) *Server {
	tb.Helper()
	s, err := Start()
	if err != nil {
		missing(tb, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// missing ends tb for a server that did not start: a skip when the
// binaries are missing outside CI, a failure otherwise.
func missing(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, ErrNotInstalled) && os.Getenv("CI") != "true" {
		tb.Skip(err)
	}
	tb.Fatalf("pgtest: starting PostgreSQL: %v", err)
}

// run runs bindir/name with args as the server's user, and returns its
// output in the error if it fails.
func (s *Server) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bindir, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Close stops the server (immediately: no checkpoint) and removes its
// directory. Later calls return the first's error.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		s.closeErr = s.run(ctx, "pg_ctl", "stop", "-w", "-m", "immediate", "-D", filepath.Join(s.dir, "data"))
		if err := os.RemoveAll(s.dir); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// DSN returns a connection string for database dbname ("postgres" always
// exists) as User over the server's unix socket, in the key=value form
// that pgx and libpq (psql) take.
func (s *Server) DSN(dbname string) string {
	return fmt.Sprintf("host=%s user=%s dbname=%s sslmode=disable", s.dir, User, dbname)
}

// Dir returns the directory of the server's unix socket: the host for
// psql's -h, or $PGHOST.
func (s *Server) Dir() string { return s.dir }

// CreateDatabase creates a new, empty database with a fresh name and
// returns its name.
func (s *Server) CreateDatabase(ctx context.Context) (string, error) {
	db, err := sql.Open("pgx", s.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	name := "db" + strconv.FormatInt(s.dbs.Add(1), 10)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: creating database %s: %w", name, err)
	}
	return name, nil
}

// DB creates a fresh database for tb and returns a pool connected to it
// (driver "pgx", jackc/pgx's database/sql adapter), closed at tb's
// cleanup. Tests that use DB do not see each other's tables.
func (s *Server) DB(tb testing.TB) *sql.DB {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	name, err := s.CreateDatabase(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	db, err := sql.Open("pgx", s.DSN(name))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// BinDir returns the directory of PostgreSQL's server binaries (initdb,
// pg_ctl), or ErrNotInstalled.
func BinDir() (string, error) {
	var dirs []string
	if d := os.Getenv("PGTEST_BINDIR"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	globbed, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(globbed, func(i, j int) bool { return version(globbed[i]) > version(globbed[j]) })
	dirs = append(dirs, globbed...)
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", ErrNotInstalled
}

// version returns N of /usr/lib/postgresql/N/bin, or 0.
func version(bindir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return n
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// unprivileged returns the credentials of "postgres", or else of "nobody".
func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("pgtest: running as root, and neither user postgres nor nobody exists to run the server as")
}

var shared struct {
	mu     sync.Mutex
	inMain bool
	srv    *Server
	err    error
}

// Main runs m's tests, then closes the server that Shared started, if any,
// and fails the test binary if goroutines leaked (goleak, with opts), and
// exits. Call it from TestMain.
func Main(m *testing.M, opts ...goleak.Option) {
	shared.mu.Lock()
	shared.inMain = true
	shared.mu.Unlock()
	ignores := append(append([]goleak.Option(nil), opts...), goleak.IgnoreCurrent())
	code := m.Run()
	shared.mu.Lock()
	srv := shared.srv
	shared.srv, shared.inMain = nil, false
	shared.mu.Unlock()
	if srv != nil {
		if err := srv.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = max(code, 1)
		}
	}
	if code == 0 {
		if err := goleak.Find(ignores...); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Shared returns the server shared by the tests of this binary, started at
// the first call (Main must be running the tests; Main closes it). Like
// New, it skips tb when the binaries are missing, or fails it under CI.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.inMain {
		tb.Fatal("pgtest: Shared needs TestMain to call pgtest.Main(m)")
	}
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = Start()
	}
	if shared.err != nil {
		missing(tb, shared.err)
	}
	return shared.srv
}
