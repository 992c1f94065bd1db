// Package httpfence fences an HTTP service with etcdlock's fencing tokens:
// clients send their hold's token with each request, and the service
// refuses a request whose token is older than one it has admitted.
//
// # Safety model
//
// A lease-based lock cannot stop a paused holder from acting after its
// lease expired: etcd grants the lock to the next waiter, and the paused
// holder, when it resumes, does not know. The fencing token (the holder
// key's create revision, which only ever grows) makes the resource refuse
// it. Here the resource sits behind HTTP: a client attaches its token to
// its requests (Transport, SetToken), and the service's Guard admits each
// request's token against a Store before the handler runs, answering 409
// Conflict to a stale token and 428 Precondition Required to a missing or
// malformed one.
//
// # The header
//
// One header carries the token: its revision, and the holder's key
// URL-path-escaped, e.g.
//
//	Etcdlock-Fencing-Token: 1234; key=etcdlock%2Fmutex%2Finvoices%2F694d7a3c1e2f0a11-1
//
// A request must carry it once; anything else (a second value, a revision
// that is not a positive decimal, a key without a lock prefix, more than
// MaxHeaderLen bytes) is malformed.
//
// # Stores
//
// Memory keeps the high-water marks in the process (a fencing.Fence): for
// a service of one replica. A *sqlfence.Store keeps them in a SQL database
// that every replica shares, so a token refused by one replica is refused
// by all. Both refuse a token of another lock than the one a resource was
// first fenced by (sqlfence.ErrLockMismatch, also 409): map each resource
// to one lock name.
//
// Admission happens before the handler runs. Requests admitted before a
// newer token arrived may still be running when it does; when the
// service's data lives in a SQL database, the handler closes that gap by
// fencing its own transaction with sqlfence.Fence.Admit and the request's
// token (TokenFrom). Fence reads as well as writes: guard every request
// that touches the resource, GETs included.
package httpfence

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/sqlfence"
)

// Header is the name of the header that carries the token.
const Header = "Etcdlock-Fencing-Token"

// MaxHeaderLen is the longest header value Parse accepts, in bytes.
const MaxHeaderLen = 4096

// DefaultResource is the resource of every request of a Guard without a
// Resource function.
const DefaultResource = "http"

var (
	// ErrNoToken is returned by Transport for a request it has no token
	// for (Token is nil or returns the zero Token), and by Parse for a
	// request without the header.
	ErrNoToken = errors.New("httpfence: no fencing token")
	// ErrMalformed is returned by Parse for a header it cannot read.
	ErrMalformed = errors.New("httpfence: malformed fencing token")
)

// Format returns the header value carrying t.
func Format(t fencing.Token) string {
	return strconv.FormatInt(t.Revision, 10) + "; key=" + url.PathEscape(t.Key)
}

// SetToken sets r's fencing header to t, for one request. It does not
// check t; a server refuses a zero Token as malformed.
func SetToken(r *http.Request, t fencing.Token) { r.Header.Set(Header, Format(t)) }

// Parse returns the token of h's fencing header. It returns ErrNoToken
// without one, and an error matching ErrMalformed for anything but one
// header value with a positive revision and an escaped key with a lock
// prefix and a holder part (see fencing.Token.LockKey).
func Parse(h http.Header) (fencing.Token, error) {
	vs := h.Values(Header)
	switch {
	case len(vs) == 0:
		return fencing.Token{}, ErrNoToken
	case len(vs) > 1:
		return fencing.Token{}, fmt.Errorf("%w: %d %s headers", ErrMalformed, len(vs), Header)
	case len(vs[0]) > MaxHeaderLen:
		return fencing.Token{}, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(vs[0]), MaxHeaderLen)
	}
	rev, key, ok := strings.Cut(vs[0], "; key=")
	if !ok {
		return fencing.Token{}, fmt.Errorf("%w: want \"<revision>; key=<escaped key>\"", ErrMalformed)
	}
	n, err := strconv.ParseInt(rev, 10, 64)
	if err != nil || n <= 0 || rev[0] == '+' || rev[0] == '0' {
		return fencing.Token{}, fmt.Errorf("%w: revision %q is not a positive decimal", ErrMalformed, rev)
	}
	k, err := url.PathUnescape(key)
	if err != nil {
		return fencing.Token{}, fmt.Errorf("%w: key: %v", ErrMalformed, err)
	}
	t := fencing.Token{Key: k, Revision: n}
	if lk := t.LockKey(); lk == "" || lk == k {
		return fencing.Token{}, fmt.Errorf("%w: key %q has no lock prefix and holder part", ErrMalformed, k)
	}
	return t, nil
}

// Transport is an http.RoundTripper that attaches a token to every request
// it sends, e.g. a hold's: &httpfence.Transport{Token: hold.Token}. It
// refuses, with ErrNoToken and without sending, a request it has no token
// for. It does not modify the caller's request. Safe for concurrent use if
// Token and Base are.
type Transport struct {
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// Token returns the token to attach, typically a lock.Hold's Token
	// method.
	Token func() fencing.Token
}

// RoundTrip sends a copy of r with the fencing header set.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	var tok fencing.Token
	if t.Token != nil {
		tok = t.Token()
	}
	if tok.IsZero() {
		if r.Body != nil {
			r.Body.Close() // a RoundTripper closes the body, even on errors
		}
		return nil, ErrNoToken
	}
	r2 := r.Clone(r.Context())
	SetToken(r2, tok)
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r2)
}

// Store admits a token for a resource, or refuses it with an error
// matching fencing.ErrStale (or sqlfence.ErrLockMismatch). A
// *sqlfence.Store is one; Memory returns another.
type Store interface {
	Admit(ctx context.Context, resource string, t fencing.Token) error
}

// Memory returns a Store that admits through f, in this process, and
// refuses a token of another lock than the first one admitted for a
// resource with an error matching sqlfence.ErrLockMismatch. A nil f means a
// new, empty Fence.
func Memory(f *fencing.Fence) Store {
	if f == nil {
		f = new(fencing.Fence)
	}
	return &memory{f: f, locks: make(map[string]string)}
}

type memory struct {
	f     *fencing.Fence
	mu    sync.Mutex
	locks map[string]string // resource -> its lock's key prefix
}

func (m *memory) Admit(_ context.Context, resource string, t fencing.Token) error {
	lk := t.LockKey()
	m.mu.Lock()
	rec, ok := m.locks[resource]
	if !ok {
		m.locks[resource] = lk
		rec = lk
	}
	m.mu.Unlock()
	if rec != lk {
		return fmt.Errorf("%w: %q is fenced by lock %q, not by %q (token %s)", sqlfence.ErrLockMismatch, resource, rec, lk, t)
	}
	return m.f.Admit(resource, t)
}

// Guard is net/http middleware that admits each request's token through
// Store before passing the request on. A Guard must not be changed once
// Wrap has been called; it is safe for concurrent use.
type Guard struct {
	// Store admits the tokens. It must not be nil.
	Store Store
	// Resource names the resource a request accesses; nil means every
	// request accesses DefaultResource.
	Resource func(r *http.Request) string
	// StaleStatus answers a stale token, or one of another lock; 0 means
	// 409 Conflict.
	StaleStatus int
	// MissingStatus answers a request without a token or with a malformed
	// one; 0 means 428 Precondition Required.
	MissingStatus int
}

// Wrap returns a handler that admits the token of each request for its
// resource and then calls next, with the token in the request's context
// (TokenFrom). It answers StaleStatus or MissingStatus, or 503 Service
// Unavailable when Store fails otherwise (a database error), with the
// reason in a text body, and does not call next. It panics if Store or next
// is nil, as http.Handle does for a nil handler.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	if g.Store == nil || next == nil {
		panic("httpfence: Guard.Wrap with a nil Store or handler")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, err := Parse(r.Header)
		if err != nil {
			http.Error(w, err.Error(), status(g.MissingStatus, http.StatusPreconditionRequired))
			return
		}
		resource := DefaultResource
		if g.Resource != nil {
			resource = g.Resource(r)
		}
		switch err := g.Store.Admit(r.Context(), resource, t); {
		case err == nil:
		case errors.Is(err, fencing.ErrStale), errors.Is(err, sqlfence.ErrLockMismatch):
			http.Error(w, err.Error(), status(g.StaleStatus, http.StatusConflict))
			return
		case errors.Is(err, sqlfence.ErrInvalid):
			http.Error(w, err.Error(), status(g.MissingStatus, http.StatusPreconditionRequired))
			return
		default:
			http.Error(w, "httpfence: admitting the token: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, t)))
	})
}

func status(set, def int) int {
	if set == 0 {
		return def
	}
	return set
}

type tokenKey struct{}

// TokenFrom returns the token a Guard admitted for the request whose
// context is ctx, and whether there is one.
func TokenFrom(ctx context.Context) (fencing.Token, bool) {
	t, ok := ctx.Value(tokenKey{}).(fencing.Token)
	return t, ok
}
