package fencing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/internal/ctxerr"
	"github.com/etcdlock/etcdlock/internal/etcdcmp"
)

// ErrFenced is returned by Commit when the token's hold is no longer
// current: its key was deleted or re-created, so the guarded operations were
// not applied.
var ErrFenced = errors.New("fencing: hold is no longer current")

// Token identifies one grant of a lock: the holder's key and the key's create
// revision. For one lock, a later Mutex hold, RWMutex write hold or election
// term always has a larger Revision than the earlier ones; for read holds
// and semaphore permits, see lock.RWMutex and lock.Semaphore.
//
// Token is a comparable value; the zero Token is held by nobody.
type Token struct {
	// Key is the holder's etcd key.
	Key string
	// Revision is the create revision of Key: the fencing number.
	Revision int64
}

// IsZero reports whether t is the zero Token.
func (t Token) IsZero() bool { return t == Token{} }

// String returns the revision and the key, as "1234@key".
func (t Token) String() string {
	return strconv.FormatInt(t.Revision, 10) + "@" + t.Key
}

// LockKey returns the key prefix shared by every grant of t's lock: Key up
// to and including its last '/' (etcdlock escapes '/' in lock names, so
// that is where the holder's own part begins), e.g. "etcdlock/mutex/db/"
// for "etcdlock/mutex/db/694d7a3c1e2f0a11-1". Every Mutex hold of a name has
// the same LockKey; so do the write holds of an RWMutex (read holds have
// another), and the terms of an election. A resource fenced by revision
// must take tokens of one LockKey only: revisions of different locks are
// not a sequence of grants. It returns "" for a Key without '/'.
func (t Token) LockKey() string {
	return t.Key[:strings.LastIndexByte(t.Key, '/')+1]
}

// Newer reports whether t was granted after u. Comparing tokens of different
// locks is meaningful only as far as their grants are ordered by etcd's
// revision, which they are.
func (t Token) Newer(u Token) bool { return t.Revision > u.Revision }

// Cmp returns an etcd comparison that holds only while the token's key
// exists with the token's create revision, that is while the hold is current.
// Put it in the If of a transaction to fence the transaction's writes.
//
// For a token not from a grant, with a revision of 0 or less, it never holds
// (etcd gives an absent key the create revision 0, so comparing with 0 would
// hold exactly while nobody holds the key). etcd refuses a transaction with
// a comparison on an empty key, so a token without a key fails the
// transaction with etcd's error.
func (t Token) Cmp() clientv3.Cmp {
	if t.Revision <= 0 {
		return clientv3.Compare(clientv3.CreateRevision(t.Key), "<", 0)
	}
	return etcdcmp.CreateRevision(t.Key, t.Revision, false) // at every Unlock: no copies
}

// valid reports whether t can be a grant's token: it has a key and a
// positive revision.
func (t Token) valid() bool { return t.Key != "" && t.Revision > 0 }

// Commit applies ops in one Txn, one round trip, that succeeds only while
// t's hold is current. When the hold is gone it applies nothing and returns
// ErrFenced with the Txn's response (nil, and no round trip, for a token not
// from a grant). Other errors, with a nil response, are etcd's or ctx's
// cause. kv must not be nil (a *clientv3.Client will do).
//
// The ops must not write t's key: a put without the holder's lease would
// detach the key from it, so the lock would outlive its holder and the token
// would stay current; a delete releases the hold behind the lock's back.
func Commit(ctx context.Context, kv clientv3.KV, t Token, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	if !t.valid() {
		return nil, fmt.Errorf("%w: %s is not a grant's token", ErrFenced, t)
	}
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	resp, err := kv.Txn(ctx).If(t.Cmp()).Then(ops...).Commit()
	if err != nil {
		if cause := ctxerr.Ended(ctx); cause != nil {
			return nil, cause
		}
		return nil, err
	}
	if !resp.Succeeded {
		return resp, fmt.Errorf("%w: %s", ErrFenced, t)
	}
	return resp, nil
}
