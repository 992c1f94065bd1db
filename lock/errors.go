package lock

import (
	"github.com/etcdlock/etcdlock/internal/config"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// Errors returned by this package. Match them with errors.Is.
var (
	// ErrLocked is returned by TryLock when another holder or an earlier
	// waiter exists.
	ErrLocked = queue.ErrLocked
	// ErrNotHeld is returned by Unlock when the hold was lost or already
	// unlocked.
	ErrNotHeld = queue.ErrNotHeld
	// ErrLost is matched by the error of a hold that was lost (see
	// LostError); the cause is ErrDeleted, ErrSessionExpired or ErrDeadline.
	ErrLost = queue.ErrLost
	// ErrReleased is the cause of a hold's Context after Unlock.
	ErrReleased = queue.ErrReleased
	// ErrDeleted means the key was deleted, not by this process: by another
	// client, or with its lease by a revoke. A hold is told of the delete
	// at once, without first asking etcd why, so a revoke this process had
	// not yet noticed shows as ErrDeleted; ErrSessionExpired when the lease
	// was already known to be gone. A waiter asks, and gets
	// ErrSessionExpired for a revoke.
	ErrDeleted = queue.ErrDeleted
	// ErrSessionExpired means the lease is gone: expired, revoked, or its
	// session closed.
	ErrSessionExpired = queue.ErrSessionExpired
	// ErrDeadline means no lease renewal was acknowledged before the
	// conservative deadline: the lease may have expired at the server.
	ErrDeadline = queue.ErrDeadline
	// ErrClosed is returned after Close, and by waits that Close ended.
	ErrClosed = queue.ErrClosed
	// ErrClientClosed is returned by an acquire, a wait or an Unlock that
	// cannot be done because the etcd client was closed (the keys then go
	// with their lease, within its TTL). It does not match
	// context.Canceled, which the etcd client reports in that case.
	ErrClientClosed = queue.ErrClientClosed
	// ErrInvalidName is returned by constructors for an empty name, one
	// longer than MaxNameLen bytes, or one that is not UTF-8.
	ErrInvalidName = keys.ErrInvalidName
	// ErrInvalidNamespace is returned for a namespace longer than
	// MaxNamespaceLen bytes or not UTF-8.
	ErrInvalidNamespace = keys.ErrInvalidNamespace
	// ErrInvalidOption is returned by constructors for an option value that
	// makes no sense; the message says which.
	ErrInvalidOption = config.ErrInvalidOption
	// ErrNilClient is returned by constructors given a nil client.
	ErrNilClient = config.ErrNilClient
)

// LostError is the error of a lost hold: Hold.Err and the cause of its
// Context. It matches ErrLost and its Cause.
type LostError = queue.LostError

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
