package lock

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
	// ErrLocked is returned by TryLock when another holder or an earlier
	// waiter exists.
	ErrLocked = errors.New("lock: held by another holder")
	// ErrHeldBySelf is returned by Mutex.TryLock when the lock is held by
	// a hold of this same Mutex that was not unlocked: a Mutex is not
	// reentrant (Lock would wait for that hold). It matches ErrLocked too.
	ErrHeldBySelf error = heldBySelf{}
	// ErrNotHeld is returned by Unlock when the hold was lost or already
	// unlocked.
	ErrNotHeld = errors.New("lock: not held")
	// ErrLost is matched by the error of a hold that was lost (see
	// LostError); the cause is ErrDeleted, ErrSessionExpired, ErrDeadline
	// or ErrMaxHold.
	ErrLost = errors.New("lock: hold lost")
	// ErrReleased is the cause of a hold's Context after Unlock.
	ErrReleased = errors.New("lock: released")
	// ErrDeleted means the key was deleted, not by this process: by another
	// client, or with its lease by a revoke. A hold is told of the delete
	// at once, without first asking etcd why, so a revoke this process had
	// not yet noticed shows as ErrDeleted; ErrSessionExpired when the lease
	// was already known to be gone. A waiter asks, and gets
	// ErrSessionExpired for a revoke.
	ErrDeleted = errors.New("lock: key deleted by another client or a lease revoke")
	// ErrSessionExpired means the lease is gone: expired, revoked, or its
	// session closed.
	ErrSessionExpired = errors.New("lock: session expired")
	// ErrDeadline means no lease renewal was acknowledged before the
	// conservative deadline: the lease may have expired at the server.
	ErrDeadline = errors.New("lock: lease renewal deadline passed")
	// ErrMaxHold means the maximum hold time (WithMaxHold) passed: the
	// hold was released by its own process.
	ErrMaxHold = errors.New("lock: maximum hold time passed")
	// ErrClosed is returned after Close, and by waits that Close ended.
	ErrClosed = errors.New("lock: closed")
	// ErrClientClosed is returned, at once, by an acquire, a wait, an
	// Unlock or a Close that cannot be done because the etcd client was
	// closed (the keys then go with their lease, within its TTL). It does not match
	// context.Canceled, which the etcd client reports in that case.
	ErrClientClosed = errors.New("lock: etcd client closed")
	// ErrInvalidName is returned by constructors for an empty name, one
	// longer than MaxNameLen bytes, or one that is not UTF-8.
	ErrInvalidName = errors.New("lock: invalid name")
	// ErrInvalidNamespace is returned for a namespace longer than
	// MaxNamespaceLen bytes or not UTF-8.
	ErrInvalidNamespace = errors.New("lock: invalid namespace")
	// ErrInvalidOption is returned by constructors for an option value that
	// makes no sense; the message says which.
	ErrInvalidOption = errors.New("lock: invalid option")
	// ErrNilClient is returned by constructors given a nil client.
	ErrNilClient = errors.New("lock: nil etcd client")
)

// heldBySelf is ErrHeldBySelf: a distinct error that matches ErrLocked.
type heldBySelf struct{}

func (heldBySelf) Error() string {
	return "lock: held by this Mutex: a hold it granted is not unlocked (a Mutex is not reentrant)"
}

// Is reports whether target is ErrLocked.
func (heldBySelf) Is(target error) bool { return target == ErrLocked }

// LostError is the error of a lost hold: Hold.Err and the cause of its
// Context. It matches ErrLost and its Cause.
type LostError struct {
	Token fencing.Token
	Cause error // ErrDeleted, ErrSessionExpired, ErrDeadline or ErrMaxHold
	// At is when the loss was found, as Done closed: a goroutine woken by
	// Done may run later, on a loaded machine by far.
	At time.Time
}

// Error names the hold and the cause.
func (e *LostError) Error() string {
	return "lock: hold " + e.Token.String() + " lost: " + strings.TrimPrefix(e.Cause.Error(), "lock: ")
}

// Is reports whether target is ErrLost.
func (e *LostError) Is(target error) bool { return target == ErrLost }

// Unwrap returns the cause.
func (e *LostError) Unwrap() error { return e.Cause }

// public reports the errors of the lock's queue as this package's.
var public = queue.NewPublic("lock: ", queue.Sentinels{
	Locked: ErrLocked, NotHeld: ErrNotHeld, Released: ErrReleased, Deleted: ErrDeleted,
	Closed: ErrClosed, SessionExpired: ErrSessionExpired, Deadline: ErrDeadline, ClientClosed: ErrClientClosed,
	InvalidOption: ErrInvalidOption, NilClient: ErrNilClient, InvalidName: ErrInvalidName, InvalidNamespace: ErrInvalidNamespace,
}, func(t fencing.Token, cause error) error { return &LostError{Token: t, Cause: cause, At: time.Now()} })

// Limits.
const (
	// MaxNameLen is the longest name, in bytes.
	MaxNameLen = keys.MaxNameLen
	// MaxNamespaceLen is the longest namespace, in bytes.
	MaxNamespaceLen = keys.MaxNamespaceLen
	// DefaultNamespace prefixes every key unless WithNamespace says otherwise.
	DefaultNamespace = keys.DefaultNamespace
	// DefaultTTL is the TTL of leases a lock grants itself.
	DefaultTTL = config.DefaultTTL
)
