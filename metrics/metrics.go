// Package metrics is what packages lock and election report to an
// Observer given with their WithMetrics option: each acquire, each end of
// a hold or term, and each renewal of a lease. It imports nothing but the
// standard library, so a program that uses lock or election links no
// metrics library; package prommetrics adapts an Observer to Prometheus.
//
// Without WithMetrics nothing is reported and nothing is measured: no
// clock is read, no goroutine started and no request sent for metrics.
// With it, a lock or election sends no request of its own for metrics
// either; it reports what its work already learns.
package metrics

import "time"

// Observer receives the events of the locks and elections it was given
// to. Its methods are called synchronously on their goroutines, some while
// they hold internal locks: they must be safe for concurrent use, return
// quickly, never block, and not call the lock or election that reports.
// Embed Nop to keep compiling when methods are added.
type Observer interface {
	// Acquired reports the end of an acquire (Lock, TryLock, RLock,
	// Acquire, Campaign...), granted or not.
	Acquired(AcquireEvent)
	// Ended reports the end of a hold or term: released, resigned or lost.
	Ended(EndEvent)
	// LeaseRenewed reports an acknowledged renewal of a lease the lock or
	// election holds or waits on.
	LeaseRenewed(RenewEvent)
}

// Nop is an Observer that does nothing; embed it in an Observer of your
// own to implement only some methods.
type Nop struct{}

// Acquired does nothing.
func (Nop) Acquired(AcquireEvent) {}

// Ended does nothing.
func (Nop) Ended(EndEvent) {}

// LeaseRenewed does nothing.
func (Nop) LeaseRenewed(RenewEvent) {}

// Kinds of primitive, as in their etcd keys.
const (
	KindMutex     = "mutex"
	KindRWMutex   = "rw"
	KindSemaphore = "sem"
	KindElection  = "election"
)

// Result is how an acquire ended.
type Result string

// Results of an acquire.
const (
	Granted Result = "granted"
	// Locked: a try (TryLock, TryAcquire...) found the lock taken.
	Locked Result = "locked"
	// Cancelled: the caller's context was cancelled.
	Cancelled Result = "cancelled"
	// Deadline: the caller's context's deadline passed.
	Deadline Result = "deadline"
	// SessionExpired: the lease ended while waiting (ErrSessionExpired).
	SessionExpired Result = "session_expired"
	// Deleted: the waiter's key was deleted by someone else.
	Deleted Result = "deleted"
	// Closed: the lock or election, or its etcd client, was closed.
	Closed Result = "closed"
	// Error: any other error, etcd's most likely.
	Error Result = "error"
)

// Cause is why a hold or term ended.
type Cause string

// Causes of a hold's end: Released, or a loss.
const (
	// Released: Unlock or Resign (also Close, and Run's resign).
	Released Cause = "released"
	// LostDeadline: no renewal of the lease was acknowledged before its
	// conservative deadline (ErrDeadline).
	LostDeadline Cause = "deadline"
	// LostKeyDeleted: the key was deleted by another client (ErrDeleted).
	LostKeyDeleted Cause = "key_deleted"
	// LostLeaseGone: the lease expired or was revoked, or the session
	// ended (ErrSessionExpired); a revoke counts here once the lease's
	// renewal says it is gone, though the hold's error may name the
	// deletion of its key, seen first.
	LostLeaseGone Cause = "lease_gone"
	// LostMaxHold: the maximum hold time passed (lock.WithMaxHold).
	LostMaxHold Cause = "max_hold"
	// LostOther: any other loss.
	LostOther Cause = "other"
)

// AcquireEvent is one acquire's end.
type AcquireEvent struct {
	Kind   string // KindMutex, KindRWMutex, KindSemaphore or KindElection
	Name   string // the lock's or election's name
	Result Result
	// Wait is how long the acquire took, from the call to its return.
	Wait time.Duration
	// Waited: granted after waiting behind another hold (contended); for
	// an election, a term taken over from another leader's term.
	Waited bool
}

// EndEvent is the end of one hold or term.
type EndEvent struct {
	Kind  string
	Name  string
	Cause Cause
	// Held is how long it was held, from its grant to its end, by this
	// process's monotonic clock.
	Held time.Duration
}

// RenewEvent is one acknowledged renewal of a lease.
type RenewEvent struct {
	Kind string
	Name string
	// Left is the time that was left before the lease's conservative
	// deadline (the time its holds would have been presumed lost) when
	// the renewal was acknowledged, before the renewal moved it: about
	// two thirds of the TTL less the safety margin when etcd answers
	// promptly; near zero or negative when renewals are late.
	Left time.Duration
}
