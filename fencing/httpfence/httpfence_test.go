package httpfence_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/httpfence"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
	"github.com/etcdlock/etcdlock/integration"
	"github.com/etcdlock/etcdlock/integration/pgtest"
	"github.com/etcdlock/etcdlock/lock"
)

func TestMain(m *testing.M) { pgtest.Main(m, integration.GoleakOptions()...) }

func tok(rev int64) fencing.Token {
	return fencing.Token{Key: "etcdlock/mutex/orders/694d7a3c1e2f0a11-1", Revision: rev}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// service is a guarded httptest server counting the requests its handler
// served, and the tokens it saw.
type service struct {
	*httptest.Server
	served atomic.Int64
	last   atomic.Int64 // the revision of the last token TokenFrom gave
}

func newService(t *testing.T, g *httpfence.Guard) *service {
	s := &service{}
	s.Server = httptest.NewServer(g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tk, ok := httpfence.TokenFrom(r.Context())
		if !ok {
			t.Error("handler without a token")
		}
		s.last.Store(tk.Revision)
		s.served.Add(1)
		io.WriteString(w, "ok")
	})))
	t.Cleanup(s.Close)
	return s
}

// do sends one request with header value h (none if h is ""), and returns
// the status.
func do(t *testing.T, url string, h ...string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), "POST", url, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range h {
		req.Header.Add(httpfence.Header, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestFormatParse(t *testing.T) {
	for _, tk := range []fencing.Token{
		tok(1),
		{Key: "ns; key=x/mutex/a%2Fb c/ü-1", Revision: 9223372036854775807},
		{Key: "a/b", Revision: 42},
	} {
		h := http.Header{}
		h.Set(httpfence.Header, httpfence.Format(tk))
		got, err := httpfence.Parse(h)
		if err != nil || got != tk {
			t.Errorf("Parse(Format(%s)) = %v, %v (header %q)", tk, got, err, h.Get(httpfence.Header))
		}
	}
	if v := httpfence.Format(fencing.Token{Key: "etcdlock/mutex/a/1", Revision: 12}); v != "12; key=etcdlock%2Fmutex%2Fa%2F1" {
		t.Errorf("Format = %q", v)
	}
}

// TestParseStrict: a missing header is ErrNoToken; every other deviation
// from "<positive revision>; key=<escaped key with a lock prefix>" is
// ErrMalformed.
func TestParseStrict(t *testing.T) {
	if _, err := httpfence.Parse(http.Header{}); !errors.Is(err, httpfence.ErrNoToken) {
		t.Errorf("no header: %v", err)
	}
	good := httpfence.Format(tok(5))
	for _, vs := range [][]string{
		{""}, {"5"}, {"abc"}, {"0; key=a%2F1"}, {"-5; key=a%2F1"}, {"+5; key=a%2F1"}, {"05; key=a%2F1"},
		{" 5; key=a%2F1"}, {"5;key=a%2F1"}, {"5; key="}, {"5; key=nolockprefix"}, {"5; key=a%2F"},
		{"5; key=a%zz1"}, {"99999999999999999999; key=a%2F1"}, {"5; key=a%2F1" + strings.Repeat("x", httpfence.MaxHeaderLen)},
		{good, good},
	} {
		h := http.Header{}
		for _, v := range vs {
			h.Add(httpfence.Header, v)
		}
		if got, err := httpfence.Parse(h); !errors.Is(err, httpfence.ErrMalformed) {
			t.Errorf("Parse(%q) = %v, %v; want ErrMalformed", vs, got, err)
		}
	}
}

// TestGuardStatuses: over a real server, a current token is served, a
// stale one gets 409, a missing or malformed one 428, a token of another
// lock 409; none of the refused reach the handler. Statuses can be
// changed.
func TestGuardStatuses(t *testing.T) {
	var f fencing.Fence
	s := newService(t, &httpfence.Guard{Store: httpfence.Memory(&f)})
	other := fencing.Token{Key: "etcdlock/mutex/reports/1-1", Revision: 100}
	steps := []struct {
		h    []string
		want int
	}{
		{[]string{httpfence.Format(tok(42))}, 200},
		{[]string{httpfence.Format(tok(42))}, 200},
		{[]string{httpfence.Format(tok(41))}, 409},
		{nil, 428},
		{[]string{"garbage"}, 428},
		{[]string{strings.Repeat("1", httpfence.MaxHeaderLen+1)}, 428},
		{[]string{httpfence.Format(other)}, 409},
		{[]string{httpfence.Format(tok(43))}, 200},
	}
	for i, st := range steps {
		if got := do(t, s.URL, st.h...); got != st.want {
			t.Errorf("step %d (%q): status %d, want %d", i, st.h, got, st.want)
		}
	}
	if n := s.served.Load(); n != 3 || s.last.Load() != 43 {
		t.Errorf("handler served %d requests, last with %d; want 3, last with 43", n, s.last.Load())
	}
	if f.Highest(httpfence.DefaultResource) != 43 {
		t.Errorf("fence's highest = %d", f.Highest(httpfence.DefaultResource))
	}

	custom := newService(t, &httpfence.Guard{Store: httpfence.Memory(&fencing.Fence{}), StaleStatus: 412, MissingStatus: 401,
		Resource: func(r *http.Request) string { return r.URL.Path }})
	for _, st := range []struct {
		path string
		tk   int64
		want int
	}{{"/a", 5, 200}, {"/a", 4, 412}, {"/b", 4, 200}, {"/a", 0, 401}} {
		var h []string
		if st.tk > 0 {
			h = append(h, httpfence.Format(tok(st.tk)))
		}
		if got := do(t, custom.URL+st.path, h...); got != st.want {
			t.Errorf("custom %s with %d: status %d, want %d", st.path, st.tk, got, st.want)
		}
	}
}

// TestTransport: the RoundTripper sends each request with the token it is
// given, so that it sees it changing holds; without one it sends nothing.
func TestTransport(t *testing.T) {
	var f fencing.Fence
	s := newService(t, &httpfence.Guard{Store: httpfence.Memory(&f)})
	var current atomic.Int64
	client := &http.Client{Transport: &httpfence.Transport{Token: func() fencing.Token {
		if r := current.Load(); r > 0 {
			return tok(r)
		}
		return fencing.Token{}
	}}}
	defer client.CloseIdleConnections()
	send := func() (int, error) {
		req, err := http.NewRequestWithContext(testCtx(t), "PUT", s.URL, strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		if req.Header.Get(httpfence.Header) != "" {
			t.Error("Transport changed the caller's request")
		}
		return resp.StatusCode, nil
	}
	if _, err := send(); !errors.Is(err, httpfence.ErrNoToken) || s.served.Load() != 0 {
		t.Fatalf("without a token: %v, %d served; want ErrNoToken, none", err, s.served.Load())
	}
	current.Store(7)
	if code, err := send(); err != nil || code != 200 || s.last.Load() != 7 {
		t.Fatalf("with 7: %d, %v, handler saw %d", code, err, s.last.Load())
	}
	current.Store(9)
	if code, err := send(); err != nil || code != 200 || s.last.Load() != 9 {
		t.Fatalf("with 9: %d, %v, handler saw %d", code, err, s.last.Load())
	}
	current.Store(8)
	if code, err := send(); err != nil || code != 409 {
		t.Fatalf("with 8 after 9: %d, %v; want 409", code, err)
	}
}

// TestSharedSQLStore: two instances of a service (two servers, two
// database pools) share one high-water mark through a sqlfence.Store, on
// PostgreSQL and on SQLite: a token refused by one is refused by the
// other.
func TestSharedSQLStore(t *testing.T) {
	dbs := map[string]func(t *testing.T) (*sql.DB, *sql.DB, sqlfence.Dialect){
		"postgresql": func(t *testing.T) (*sql.DB, *sql.DB, sqlfence.Dialect) {
			srv := pgtest.Shared(t)
			name, err := srv.CreateDatabase(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			return open(t, "pgx", srv.DSN(name)), open(t, "pgx", srv.DSN(name)), sqlfence.PostgreSQL
		},
		"sqlite": func(t *testing.T) (*sql.DB, *sql.DB, sqlfence.Dialect) {
			dsn := "file:" + filepath.Join(t.TempDir(), "fence.db") + "?_pragma=busy_timeout(20000)"
			return open(t, "sqlite", dsn), open(t, "sqlite", dsn), sqlfence.SQLite
		},
	}
	for name, mk := range dbs {
		t.Run(name, func(t *testing.T) {
			db1, db2, d := mk(t)
			f, err := sqlfence.New(d, "")
			if err != nil {
				t.Fatal(err)
			}
			if err := f.CreateTable(testCtx(t), db1); err != nil {
				t.Fatal(err)
			}
			a := newService(t, &httpfence.Guard{Store: &sqlfence.Store{DB: db1, Fence: f}})
			b := newService(t, &httpfence.Guard{Store: &sqlfence.Store{DB: db2, Fence: f}})
			for i, st := range []struct {
				s    *service
				rev  int64
				want int
			}{{a, 41, 200}, {b, 42, 200}, {a, 41, 409}, {b, 41, 409}, {a, 42, 200}, {a, 43, 200}, {b, 42, 409}} {
				if got := do(t, st.s.URL, httpfence.Format(tok(st.rev))); got != st.want {
					t.Errorf("step %d: %d: status %d, want %d", i, st.rev, got, st.want)
				}
			}
			other := fencing.Token{Key: "etcdlock/mutex/reports/1-1", Revision: 100}
			if got := do(t, b.URL, httpfence.Format(other)); got != 409 {
				t.Errorf("a token of another lock: status %d, want 409", got)
			}
			if h, err := f.Highest(testCtx(t), db2, httpfence.DefaultResource); err != nil || h != tok(43) {
				t.Errorf("Highest = %v, %v; want %v", h, err, tok(43))
			}
			db1.Close() // the store fails: 503, and the handler is not called
			served := a.served.Load()
			if got := do(t, a.URL, httpfence.Format(tok(44))); got != http.StatusServiceUnavailable || a.served.Load() != served {
				t.Errorf("with a closed database: status %d, want 503", got)
			}
		})
	}
}

func open(t *testing.T, driver, dsn string) *sql.DB {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestRealHolds: tokens of real holds of a lock.Mutex: once the lock has
// passed from one client to another, the first's requests are refused.
func TestRealHolds(t *testing.T) {
	srv := integration.NewServer(t, integration.WithoutFsync())
	cli := srv.Client(t)
	ns := integration.Namespace(t)
	defer integration.RequireEmpty(t, cli, ns)
	ctx := testCtx(t)
	var f fencing.Fence
	s := newService(t, &httpfence.Guard{Store: httpfence.Memory(&f)})
	m, err := lock.NewMutex(cli, "orders", lock.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h1, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c1 := &http.Client{Transport: &httpfence.Transport{Token: h1.Token}}
	defer c1.CloseIdleConnections()
	get := func(c *http.Client) int {
		req, err := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(c1); code != 200 {
		t.Fatalf("holder 1: %d", code)
	}
	if err := h1.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	h2, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2 := &http.Client{Transport: &httpfence.Transport{Token: h2.Token}}
	defer c2.CloseIdleConnections()
	if code := get(c2); code != 200 {
		t.Fatalf("holder 2: %d", code)
	}
	if code := get(c1); code != 409 {
		t.Fatalf("holder 1 after holder 2: %d, want 409", code)
	}
	if err := h2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestGuardBadSetup: a Guard without a Store, or wrapping nothing, panics
// at Wrap, not at its first request; Memory(nil) works.
func TestGuardBadSetup(t *testing.T) {
	for name, wrap := range map[string]func(){
		"nil store":   func() { (&httpfence.Guard{}).Wrap(http.NotFoundHandler()) },
		"nil handler": func() { (&httpfence.Guard{Store: httpfence.Memory(nil)}).Wrap(nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Wrap did not panic", name)
				}
			}()
			wrap()
		}()
	}
	s := httpfence.Memory(nil)
	if err := s.Admit(context.Background(), "r", tok(2)); err != nil {
		t.Fatal(err)
	}
	if err := s.Admit(context.Background(), "r", tok(1)); !errors.Is(err, fencing.ErrStale) {
		t.Fatalf("Memory(nil): 1 after 2 = %v, want stale", err)
	}
}
