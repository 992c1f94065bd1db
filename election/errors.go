package election

import (
	"errors"
	"strings"
	"time"

	"github.com/etcdlock/etcdlock/fencing"

	"github.com/etcdlock/etcdlock/internal/config"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// Errors returned by this package. Match them with errors.Is.
var (
	// ErrNoLeader is returned by Leader when nobody leads.
	ErrNoLeader = errors.New("election: no leader")
	// ErrNotLeader is returned by Proclaim and Resign when the term is no
	// longer current; it wraps the *LostError when the term was lost.
	ErrNotLeader = errors.New("election: not the leader")
	// ErrInvalidValue is returned by Campaign, Proclaim and Run for a value
	// longer than MaxValueLen bytes.
	ErrInvalidValue = errors.New("election: invalid value")
	// ErrLost is matched by the error of a lost term (see LostError); the
	// cause is ErrDeleted, ErrSessionExpired or ErrDeadline.
	ErrLost = errors.New("election: term lost")
	// ErrResigned is the cause of a term's Context after Resign.
	ErrResigned = errors.New("election: resigned")
	// ErrDeleted means the leader key was deleted, not by this process: by
	// another client, or with its lease by a revoke. A term is told of the
	// delete at once, without first asking etcd why, so a revoke this
	// process had not yet noticed shows as ErrDeleted; ErrSessionExpired
	// when the lease was already known to be gone.
	ErrDeleted = errors.New("election: leader key deleted by another client or a lease revoke")
	// ErrSessionExpired means the lease is gone.
	ErrSessionExpired = errors.New("election: session expired")
	// ErrDeadline means no lease renewal was acknowledged before the
	// conservative deadline: the lease may have expired at the server.
	ErrDeadline = errors.New("election: lease renewal deadline passed")
	// ErrClosed is returned after Close, and by the campaigns and Runs
	// that Close ended.
	ErrClosed = errors.New("election: closed")
	// ErrClientClosed is returned, at once, by a campaign, Run, Leader,
	// Proclaim, Resign or Close that cannot be done because the etcd client
	// was closed (the keys then go with their lease, within its TTL). It does not match
	// context.Canceled, which the etcd client reports in that case.
	ErrClientClosed = errors.New("election: etcd client closed")
	// ErrRunning is returned by Run, at once and without campaigning, while
	// another Run is in progress on the same Election.
	ErrRunning = errors.New("election: Run already in progress on this Election")
	// ErrUnhealthy is returned by Check when Run's leader work runs on too
	// long: more than the tolerance after its term ended or after Run's
	// context ended, or past the term's lease deadline (see Check).
	ErrUnhealthy = errors.New("election: leader work unhealthy")
	// ErrInvalidName, ErrInvalidNamespace, ErrInvalidOption and
	// ErrNilClient are returned by New for bad arguments. ErrInvalidOption
	// is also returned by Run for Callbacks without Lead, by Check for a
	// negative tolerance, and by Campaign
	// and Run when the safety margin is not less than half the TTL of the
	// session given with WithSession (known only once its lease is read).
	ErrInvalidName      = errors.New("election: invalid name")
	ErrInvalidNamespace = errors.New("election: invalid namespace")
	ErrInvalidOption    = errors.New("election: invalid option")
	ErrNilClient        = errors.New("election: nil etcd client")
)

// LostError is the error of a lost term: Term.Err and the cause of its
// Context. It matches ErrLost and its Cause.
type LostError struct {
	Token fencing.Token
	Cause error // ErrDeleted, ErrSessionExpired or ErrDeadline
	// At is when the loss was found, as the term's context ended.
	At time.Time
}

// Error names the term and the cause.
func (e *LostError) Error() string {
	return "election: term " + e.Token.String() + " lost: " + strings.TrimPrefix(e.Cause.Error(), "election: ")
}

// Is reports whether target is ErrLost.
func (e *LostError) Is(target error) bool { return target == ErrLost }

// Unwrap returns the cause.
func (e *LostError) Unwrap() error { return e.Cause }

// public reports the errors of the election's queue as this package's.
// The queue's ErrLocked and ErrNotHeld do not reach a caller as such: a
// campaign never tries, and Resign wraps a release's ErrNotHeld in
// ErrNotLeader.
var public = queue.NewPublic("election: ", queue.Sentinels{
	Locked: errors.New("election: held by another candidate"), NotHeld: errNotHeld, Released: ErrResigned,
	Deleted: ErrDeleted, Closed: ErrClosed, SessionExpired: ErrSessionExpired, Deadline: ErrDeadline,
	ClientClosed: ErrClientClosed, InvalidOption: ErrInvalidOption, NilClient: ErrNilClient,
	InvalidName: ErrInvalidName, InvalidNamespace: ErrInvalidNamespace,
}, func(t fencing.Token, cause error) error { return &LostError{Token: t, Cause: cause, At: time.Now()} })

// errNotHeld is the release error Resign reports as ErrNotLeader.
var errNotHeld = errors.New("election: not held")

// Limits and defaults.
const (
	// MaxNameLen is the longest election name New accepts, in bytes.
	MaxNameLen = keys.MaxNameLen
	// MaxValueLen is the longest value Campaign, Proclaim and Run accept,
	// in bytes.
	MaxValueLen = config.MaxValueLen
	// DefaultNamespace is the key prefix used unless WithNamespace is given.
	DefaultNamespace = keys.DefaultNamespace
	// DefaultTTL is the TTL of the lease an Election grants itself unless
	// WithTTL or WithSession is given.
	DefaultTTL = config.DefaultTTL
)
