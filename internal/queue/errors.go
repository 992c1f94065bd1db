package queue

import (
	"errors"
	"fmt"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/lease"
)

// Errors shared by every primitive; the public packages re-export them.
var (
	ErrLocked         = errors.New("etcdlock: held by another holder")
	ErrNotHeld        = errors.New("etcdlock: not held")
	ErrReleased       = errors.New("etcdlock: released")
	ErrLost           = errors.New("etcdlock: hold lost")
	ErrDeleted        = errors.New("etcdlock: key deleted by another client or a lease revoke")
	ErrClosed         = lease.ErrClosed
	ErrSessionExpired = lease.ErrExpired
	ErrDeadline       = lease.ErrDeadline
	// ErrClientClosed is returned for a request that cannot be made
	// because the etcd client was closed. It does not match
	// context.Canceled: the caller's context may be alive.
	ErrClientClosed = errors.New("etcdlock: etcd client closed")
)

// LostError reports that a hold was lost, and why. It matches ErrLost and
// its Cause (ErrDeleted, ErrSessionExpired or ErrDeadline).
type LostError struct {
	Token fencing.Token
	Cause error
}

func (e *LostError) Error() string {
	return fmt.Sprintf("etcdlock: hold %s lost: %v", e.Token, e.Cause)
}

// Is reports whether target is ErrLost.
func (e *LostError) Is(target error) bool { return target == ErrLost }

// Unwrap returns the cause.
func (e *LostError) Unwrap() error { return e.Cause }
