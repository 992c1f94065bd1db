package queue

import (
	"errors"
	"fmt"
	"strings"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/config"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/lease"
)

// Errors of every primitive. A Primitive reports them as its public
// package's own (see Public); their messages have no package prefix.
var (
	ErrLocked         = errors.New("held by another holder")
	ErrNotHeld        = errors.New("not held")
	ErrReleased       = errors.New("released")
	ErrLost           = errors.New("hold lost")
	ErrDeleted        = errors.New("key deleted by another client or a lease revoke")
	ErrClosed         = lease.ErrClosed
	ErrSessionExpired = lease.ErrExpired
	ErrDeadline       = lease.ErrDeadline
	// ErrClientClosed is returned for a request that cannot be made
	// because the etcd client was closed. It does not match
	// context.Canceled: the caller's context may be alive.
	ErrClientClosed = errors.New("etcd client closed")
	// ErrKeyTaken: the waiter's key names kept being taken by another
	// writer. It has no public sentinel.
	ErrKeyTaken = errors.New("waiter key taken")
	// ErrMalformed is the error for an answer from etcd without the
	// header or the operations' responses its request asked for. etcd
	// always sends them; only a transport that corrupts its stream (a test
	// proxy dropping bytes mid-stream, say) can deliver such an answer,
	// and the request's outcome is then unknown.
	ErrMalformed = errors.New("malformed response from etcd")
)

// errGoneEarly is the error of an acquire that found its lease gone before
// it put its key: nothing waited, so a Primitive whose Source grants its
// own leases tries once more on a new one (see Primitive.acquire). It
// matches ErrSessionExpired.
var errGoneEarly = fmt.Errorf("%w before the waiter's key was put", lease.ErrExpired)

// goneEarly returns errGoneEarly for lease.ErrExpired, and err otherwise.
func goneEarly(err error) error {
	if err == lease.ErrExpired {
		return errGoneEarly
	}
	return err
}

// Public is how a public package (lock, election) reports the errors of
// this package and of packages lease, config and keys: as its own
// sentinels, each message starting with the package's prefix. It is safe
// for concurrent use.
type Public struct {
	prefix    string
	sentinels map[error]error // internal -> the package's; nil: prefix only
	newLost   func(t fencing.Token, cause error) error
}

// Sentinels are a public package's own errors, one per internal sentinel.
type Sentinels struct {
	Locked, NotHeld, Released, Deleted, Closed, SessionExpired, Deadline, ClientClosed error
	InvalidOption, NilClient, InvalidName, InvalidNamespace                            error
}

// NewPublic returns the Public of a package whose messages start with
// prefix (e.g. "lock: "). lost returns the package's error of a hold lost
// with cause (one of s): it must match the package's ErrLost and cause.
func NewPublic(prefix string, s Sentinels, lost func(t fencing.Token, cause error) error) *Public {
	return &Public{prefix: prefix, newLost: lost, sentinels: map[error]error{
		ErrLocked: s.Locked, ErrNotHeld: s.NotHeld, ErrReleased: s.Released, ErrDeleted: s.Deleted,
		ErrClosed: s.Closed, ErrSessionExpired: s.SessionExpired, ErrDeadline: s.Deadline,
		ErrClientClosed: s.ClientClosed, ErrKeyTaken: nil, ErrMalformed: nil, lease.ErrRevoke: nil,
		config.ErrInvalidOption: s.InvalidOption, config.ErrNilClient: s.NilClient,
		keys.ErrInvalidName: s.InvalidName, keys.ErrInvalidNamespace: s.InvalidNamespace,
	}}
}

// Err returns err as the public package reports it: an internal sentinel
// as the package's own; an error that wraps internal sentinels as one with
// the package's prefix that matches their public sentinels as well as
// everything err matches; anything else (ctx's cause, etcd's errors, the
// package's own) as it is. A nil p returns err.
func (p *Public) Err(err error) error {
	if p == nil || err == nil {
		return err
	}
	if pub := p.sentinels[err]; pub != nil {
		return pub
	}
	var pubs []error
	found := false
	for in, pub := range p.sentinels {
		if errors.Is(err, in) {
			found = true
			if pub != nil {
				pubs = append(pubs, pub)
			}
		}
	}
	if !found {
		return err
	}
	// One prefix per message, also where err wraps an error of the package.
	msg := p.prefix + strings.ReplaceAll(err.Error(), p.prefix, "")
	return &publicError{msg: msg, errs: append(pubs, err)}
}

// publicError is an error reported as a public package's: see Public.Err.
type publicError struct {
	msg  string
	errs []error // the public sentinels, then the error itself
}

func (e *publicError) Error() string   { return e.msg }
func (e *publicError) Unwrap() []error { return e.errs }

// lost returns the error of a hold lost with cause.
func (p *Public) lost(t fencing.Token, cause error) error {
	if p == nil {
		return fmt.Errorf("%w: %s: %w", ErrLost, t, cause)
	}
	return p.newLost(t, p.Err(cause))
}
