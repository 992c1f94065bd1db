// Package lock provides fair (FIFO) distributed locks on etcd whose every
// grant carries a fencing token: a Mutex, a writer-fair RWMutex, and a
// counting Semaphore whose holders take k of N permits. All three are one
// queue mechanism with three admission rules.
//
// A Mutex is a queue of keys under one prefix, each attached to an etcd
// lease; the key with the lowest create revision holds the lock. Lock blocks
// until this waiter's turn, watching only the waiter just ahead of it (no
// herd), and confirms ownership with one read after waiting. A Hold is one
// grant: its Token, a Done channel and Context that end at the first sign the
// hold may be lost, and Unlock, a delete guarded by the key's create revision
// that can never remove someone else's hold.
//
// Inspect reads the queues of a name and says who holds and who waits, by
// the same rules: a snapshot for display and monitoring.
//
// # Safety model
//
// A lease-based lock cannot stop a paused holder from acting after its lease
// expired. If a holder stops for longer than its TTL (a GC pause, a stopped
// VM, a network partition), etcd expires its lease and grants the lock to the
// next waiter, and the paused holder, when it resumes, does not know. No
// client library can prevent that. What this package does:
//
//   - It tells a live holder early. Done closes when the holder's key is
//     deleted, when the lease is gone, or when a conservative local deadline
//     passes: the send time of the last acknowledged lease renewal plus the
//     TTL, minus a safety margin. The server cannot expire the lease before
//     that time, so a holder that watches Done learns of loss before the
//     lock can be granted to anyone else, unless the holder itself is paused.
//   - It gives every grant a fencing token (package fencing), the key's
//     create revision, which only ever grows. Make the protected resource
//     refuse a token lower than the highest it has seen (fencing.Fence; for
//     an RWMutex, fencing.RWFence, since read holds overlap), or guard etcd writes
//     with the token (fencing.Commit; the only way for semaphore permits,
//     whose holds overlap in no order). That is what keeps a paused, stale
//     holder from doing harm.
//
// Use the token. Without it, the lock is an efficiency measure, not a
// correctness guarantee.
//
// # Client settings
//
// Renewals go over the client's connection, one at a time, each given up
// after a TTL: set the client's DialKeepAliveTime and DialKeepAliveTimeout
// (say 10 s and 3 s) so that gRPC notices a dead connection and reconnects
// well within the TTL. Without keep-alive pings, a connection that died
// silently holds the renewal until it times out, and the hold is reported
// lost (safely, but needlessly) where a reconnect would have kept it.
//
// # Contexts and errors
//
// A call given a context that has already ended sends nothing to etcd and
// returns the context's cause (context.Cause). A nil context panics, as in
// the standard library, before any state changes. Every error a call
// returns matches one of the package's Err values with errors.Is, or is
// the context's cause or etcd's own error.
package lock
