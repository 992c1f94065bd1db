package election

import (
	"errors"

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
	ErrLost = queue.ErrLost
	// ErrResigned is the cause of a term's Context after Resign.
	ErrResigned = queue.ErrReleased
	// ErrDeleted means the leader key was deleted, not by this process: by
	// another client, or with its lease by a revoke. A term is told of the
	// delete at once, without first asking etcd why, so a revoke this
	// process had not yet noticed shows as ErrDeleted; ErrSessionExpired
	// when the lease was already known to be gone.
	ErrDeleted = queue.ErrDeleted
	// ErrSessionExpired means the lease is gone.
	ErrSessionExpired = queue.ErrSessionExpired
	// ErrDeadline means no lease renewal was acknowledged before the
	// conservative deadline: the lease may have expired at the server.
	ErrDeadline = queue.ErrDeadline
	// ErrClosed is returned after Close, and by the campaigns and Runs
	// that Close ended.
	ErrClosed = queue.ErrClosed
	// ErrClientClosed is returned by a campaign, Run, Leader, Proclaim or
	// Resign that cannot be done because the etcd client was closed (the keys then
	// go with their lease, within its TTL). It does not match
	// context.Canceled, which the etcd client reports in that case.
	ErrClientClosed = queue.ErrClientClosed
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
	ErrInvalidName      = keys.ErrInvalidName
	ErrInvalidNamespace = keys.ErrInvalidNamespace
	ErrInvalidOption    = config.ErrInvalidOption
	ErrNilClient        = config.ErrNilClient
)

// LostError is the error of a lost term. It matches ErrLost and its Cause.
type LostError = queue.LostError

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
