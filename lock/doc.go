// Package lock provides fair (FIFO) distributed locks on etcd whose every
// grant carries a fencing token: a Mutex, a writer-fair RWMutex, and a
// counting Semaphore whose holders take k of N permits. All three are one
// queue of keys under the lock's prefix, each key on an etcd lease, with
// three admission rules. A waiter watches only the keys it waits for (for
// a Mutex, the one just ahead: no herd). Inspect reads a queue and says who
// holds and who waits.
//
// A MultiLock takes several of these locks as one, all or nothing, always
// in the order of their key prefixes, so that two callers naming the same
// locks in different orders can never deadlock.
//
// A Hold is one grant: its Token, a Done channel and Context that end at
// the first sign the hold may be lost, and Unlock, a delete guarded by the
// key's create revision that can never remove someone else's hold.
//
// Any process can ask the current holders of a lock to release it
// (RequestRelease, or "etcdlock revoke NAME"): a holder sees the request on
// its Hold's ReleaseRequested channel and may unlock, or ignore it. The
// request is a key on the holder's lease under "<namespace>revoke/",
// beside the lock's queue and never in it (no waiter waits for it, and
// Inspect does not list it), named for the exact hold (its key and create
// revision), and deleted in the same Txn as the hold's key when it ends.
//
// WithMinHold and WithMaxHold bound how long a hold keeps its name: at
// least the minimum after it was granted, even if unlocked sooner (the key
// stays, on a lease of its own that expires at the minimum), and at most the
// maximum, however the holder behaves. With TryLock they run a job once
// per period on a fleet whose schedulers all fire. Both durations are
// measured by etcd's lease TTLs and the holder's monotonic clock, never by
// wall clocks compared across machines, so clock skew between the
// machines does not shorten or lengthen them; a holder's clock that runs
// fast or slow changes them by its drift, not by its offset.
//
// WithLockDelay holds a Mutex back after an unclean loss (its holder's
// lease expired or was revoked, or its key was deleted by another client):
// the next holder is granted no sooner than the delay after the loss, while
// a clean Unlock hands off at once. A release marks itself clean in its own
// Txn; the waiter next in line reads the mark with the read it makes anyway,
// and records an unclean loss in a key on a lease of the delay that every
// acquire reads. Each enqueue also puts a lease-less holding record of its
// key, which a release deletes: the next acquirer that finds a record of a
// key gone records a loss nobody saw (see the README).
//
// NewEtcdMutex queues in the key layout of etcd's concurrency.Mutex and of
// "etcdctl lock", so that the three exclude each other, in FIFO order, on
// the same name: for a fleet moving to etcdlock one process at a time.
//
// # Safety model
//
// A lease-based lock cannot stop a paused holder from acting after its
// lease expired. A holder stopped for longer than its TTL (a GC pause, a
// stopped VM, a partition) has its lease expired by etcd and the lock
// granted to the next waiter, and when it resumes it does not know. No
// client library can prevent that. What this package does:
//
//   - It tells a live holder early. Done closes when the key is deleted,
//     when the lease is gone, or when a conservative local deadline passes:
//     the send time of the last acknowledged renewal plus the TTL, minus a
//     safety margin, which comes before etcd can expire the lease. That
//     holds as long as etcd keeps a lease for the TTL it acknowledged,
//     which etcd does not always do: a leader that was paused, or cut off
//     while it went on ticking, can answer renewals the next leader never
//     sees, and once resumed propose revocations from its stale view,
//     which the new leader applies (etcd-io/etcd#15247). Such a holder
//     learns at its key's delete, one watch delivery late, or at its next
//     renewal; the fault suite with real processes meets this case.
//   - It gives every grant a fencing token (package fencing): the key's
//     create revision, which only ever grows. Make the resource refuse a
//     token lower than the highest it has seen (fencing.Fence; for an
//     RWMutex, fencing.RWFence, since read holds overlap), or guard etcd
//     writes with the token (fencing.Commit; the only way for semaphore
//     permits, whose holds overlap in no order).
//
// Use the token. Without it, the lock is an efficiency measure, not a
// correctness guarantee.
//
// # Errors
//
// Every call that does I/O takes a context; given one that has already
// ended, it sends nothing and returns the context's cause (context.Cause).
// A nil context panics, before any state changes. Constructors do no I/O
// and return ErrNilClient, ErrInvalidName, ErrInvalidNamespace or
// ErrInvalidOption for bad arguments.
//
// An acquire (Lock, RLock, Acquire, their Try forms, Do and RDo) blocks
// until granted. On failure it leaves no key behind: it removes its key on
// a bounded context of its own, or, once ctx has ended or if etcd does not
// answer, returns at once and leaves the key to the lease's keeper, which
// deletes it in the background as soon as etcd answers (or it goes with the
// lease); such a key grants nothing. It returns one of:
//
//   - ctx's cause, if ctx ended first;
//   - ErrLocked, from a Try form that would have to wait;
//   - ErrSessionExpired if the lease ended while waiting, or ErrDeleted if
//     another client deleted the waiting key (a lease of the primitive's
//     own found gone before the wait, revoked while it was idle, is
//     replaced at once);
//   - ErrClosed after or during Close, or ErrClientClosed once the etcd
//     client is closed;
//   - ErrInvalidOption if the safety margin does not fit the TTL the server
//     granted (or the session's);
//   - etcd's own error.
//
// A lost hold reports a *LostError, which matches ErrLost and its cause:
// ErrDeleted, ErrSessionExpired, ErrDeadline or, under WithMaxHold,
// ErrMaxHold. Every error matches one of
// the package's Err values with errors.Is, or is ctx's cause or etcd's
// error; the package's messages start with "lock: ".
//
// # Close
//
// Close of a Mutex, RWMutex or Semaphore ends its waits in progress (they
// return ErrClosed), unlocks every hold still held through it, together on
// one context bounded by 5 s, and revokes the lease it granted itself, if
// any, on up to 5 s more (a session given with WithSession stays open), so
// it does not hang when etcd does not answer; with the etcd client closed
// it sends nothing, returns at once, and reports the holds it could not
// unlock with ErrClientClosed (their keys go with the lease, which nobody
// renews any more). Later acquires return
// ErrClosed. Close is idempotent: a Close called while another runs waits
// for it and returns nil.
//
// # Client settings
//
// Renewals go over the client's connection, one at a time on one
// keep-alive stream per lease (with password auth, one login per stream,
// not per renewal), each given up after a TTL: set the client's DialKeepAliveTime and DialKeepAliveTimeout
// (say 10 s and 3 s) so that gRPC notices a dead connection and reconnects
// well within the TTL. Without keep-alive pings, a connection that died
// silently holds the renewal until it times out, and the hold is reported
// lost (safely, but needlessly) where a reconnect would have kept it.
// gRPC raises a DialKeepAliveTime under 10 s to 10 s; etcd closes a
// connection that pings more often than its --grpc-keepalive-min-time
// (5 s by default) with a "too_many_pings" GoAway, so keep that server flag
// under 10 s.
package lock
