// Package election elects one leader among many processes, on etcd, and
// runs a controller's work only while it leads.
//
// Candidates queue as keys under one prefix, each attached to the
// candidate's lease; the oldest key leads, and the others follow in the
// order they campaigned. It is the queue of package lock: a candidate
// watches only the candidate ahead of it, confirms in one read that its key
// is still alive when its turn comes (so a candidate whose lease expired
// while it waited is never told it leads), and removes its key on a bounded
// context when it gives up.
//
// A Term is one leadership. Its Token is the leader key's create revision:
// every later term has a larger one. Its Done channel and Context end at the
// first sign the term may be lost: the key deleted, the lease gone, or the
// conservative lease deadline passed (the send time of the last acknowledged
// renewal plus the TTL minus a margin), which comes before the server can
// expire the lease and elect someone else. Proclaim and Resign are
// transactions guarded by the token, so a deposed leader can change nothing.
//
// Run is the loop a controller wants: campaign, lead with a context that is
// cancelled on loss, wait for the work to return, resign, campaign again;
// when its context ends it resigns so a standby takes over at once, and it
// returns only after the leader's work has returned. Election.Close during
// Run does the same: it ends the Run and waits for it, so it must not be
// called from Lead or another callback of Run.
//
// Any process can ask the current leader to step down (RequestResign, or
// "etcdlock revoke --election NAME"): the leader sees it on its Term's
// ResignRequested channel and may resign, or ignore it, for a graceful
// hand-over before a rolling upgrade stops it. The request is a key on the
// leader's lease beside the election's queue (never in it), deleted when
// the term ends.
//
// # Safety model
//
// A lease-based election cannot stop a paused leader from acting after its
// lease expired and another process was elected: a process stopped by a GC
// pause, a frozen VM or a partition does not know it was stopped. Leader
// work that watches its context stops on time when the process is merely
// slow or cut off; against a paused process only fencing helps. Guard the
// leader's writes with the term's token (fencing.Commit for data in etcd,
// fencing.Fence or an equivalent check for anything else), so that the
// resource refuses a deposed leader. A term's context ends before etcd
// may expire its lease, provided etcd keeps the lease for the TTL it
// acknowledged; an etcd leader that was paused can revoke it early
// (etcd-io/etcd#15247), and the term then ends when its key's delete
// arrives: one more reason for the token (see package lock).
//
// Set the client's DialKeepAliveTime and DialKeepAliveTimeout so that a
// dead connection is noticed well within the TTL (see package lock).
//
// # Errors
//
// Every call that does I/O takes a context; given one that has already
// ended, it sends nothing and returns the context's cause (context.Cause).
// A nil context panics, before any state changes. New does no I/O and
// returns ErrNilClient, ErrInvalidName, ErrInvalidNamespace or
// ErrInvalidOption for bad arguments.
//
// A campaign (Campaign, and each of Run's) blocks until it leads. On
// failure it removes its key on a bounded context of its own, or, once ctx
// has ended or if etcd does not answer, returns at once and leaves the key
// to the lease's keeper, which deletes it in the background as soon as
// etcd answers (or it goes with the lease); such a key grants nothing. It
// returns one of: ctx's cause; ErrInvalidValue; ErrSessionExpired if the
// lease ended while waiting (a candidate is never told it leads on a key
// it no longer has; a lease of the Election's own found gone before the
// wait, revoked while it was idle, is replaced at once); ErrDeleted
// if another client deleted its key; ErrClosed after or during Close;
// ErrClientClosed once the etcd client is closed; ErrInvalidOption if the
// safety margin is not less than half the TTL of the session given with
// WithSession; or etcd's own error.
//
// Run retries a campaign that fails for a reason that may pass (logged,
// with a backoff) and returns, once every goroutine it started has
// returned, ctx's cause, ErrClosed, ErrClientClosed, or ErrSessionExpired
// when the WithSession session ended; at once ErrInvalidOption for a nil
// Callbacks.Lead, ErrInvalidValue, or ErrRunning while another Run is in
// progress on the Election; or an error wrapping a campaign error that
// retrying cannot cure (ErrInvalidOption; etcd's permission-denied,
// authentication-failed, user-not-found, user-empty and request-too-large).
//
// A lost term reports a *LostError, which matches ErrLost and its cause:
// ErrDeleted, ErrSessionExpired or ErrDeadline. Every error matches one of
// the package's Err values with errors.Is, or is ctx's cause or etcd's
// error; the package's messages start with "election: ".
package election
