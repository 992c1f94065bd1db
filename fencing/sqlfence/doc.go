// Package sqlfence fences a SQL database's data with etcdlock's fencing
// tokens, inside the caller's own transactions: the database itself refuses
// a stale holder. It is built on database/sql alone and works with any
// driver of PostgreSQL or SQLite.
//
// # Safety model
//
// A lease-based lock cannot stop a paused holder from acting after its
// lease expired: etcd grants the lock to the next waiter, and the paused
// holder, when it resumes, does not know. The fencing token (the holder
// key's create revision, which only ever grows) makes the resource refuse
// it. Here the resource is a set of rows: one small table records, for each
// resource (a name the caller chooses: a table, a tenant, a group of rows),
// the highest token admitted, and Fence.Admit, run first in the caller's
// transaction, refuses a lower one. The check and the caller's writes commit
// together or not at all.
//
//	tx, err := db.BeginTx(ctx, nil)
//	// ...
//	if err := fence.Admit(ctx, tx, "invoices", hold.Token()); err != nil {
//		return err // stale (fencing.ErrStale): tx is rolled back already
//	}
//	// read, compute, write invoices ...
//	return tx.Commit()
//
// # Reads too
//
// Admit before reading, not only before writing. A stale holder that reads,
// computes and writes loses the update of a newer holder if only its write
// is checked: the newer one may have written between them. Admit locks the
// resource's record until the transaction ends, so a newer holder's Admit
// waits for this transaction, and once it has committed, an older token's
// Admit (and so its read) is refused. One Admit, first in the transaction,
// covers everything the transaction reads and writes of the resource.
//
// # Ordering
//
// Admit is one statement: an upsert that inserts the resource's record or
// raises its revision only if the token is not older and is of the same
// lock (INSERT ... ON CONFLICT DO UPDATE ... WHERE, RETURNING). It locks the
// record whether or not it changes it, so concurrent transactions of one
// resource are serialized by the database, and a transaction with token 41
// never commits after one with 42 has:
//
//   - PostgreSQL, READ COMMITTED (the default): a second admission waits for
//     the first transaction to end and then evaluates its condition against
//     the committed record.
//   - PostgreSQL, REPEATABLE READ and SERIALIZABLE: a second admission that
//     finds the record changed by a transaction that committed after its
//     snapshot fails with a serialization failure (SQLSTATE 40001). That is
//     the database refusing; the caller retries the whole transaction, and
//     its retry sees the newer record (and is then refused as stale, if it
//     is).
//   - SQLite has one writer at a time. Admit writes, so the transaction holds
//     the write lock from Admit to its end. With modernc.org/sqlite,
//     database/sql's BeginTx sends BEGIN (DEFERRED; the isolation level is
//     ignored): open the database with "_txlock=immediate" to take the write
//     lock at BEGIN, and a "_pragma=busy_timeout(ms)" so that writers wait
//     for each other instead of failing at once with SQLITE_BUSY. A
//     transaction that read before Admit can fail with SQLITE_BUSY when it
//     tries to write: a refusal, to retry like a serialization failure.
//
// On every error Admit rolls the transaction back, so a caller that forgets
// to check cannot commit a stale holder's writes.
//
// # One lock per resource
//
// Revisions are compared only between grants of one lock: those of another
// lock are a different sequence. Each record keeps the lock's key prefix
// (fencing.Token.LockKey, e.g. "etcdlock/mutex/invoices/") beside the
// revision, and Admit refuses a token of another lock with ErrLockMismatch
// instead of comparing. So map each resource to exactly one lock name (and
// namespace) that every writer of it takes: a Mutex (which `etcdlock run`
// takes by default), the write side of an RWMutex (`etcdlock run
// --write`), or an election. Read
// holds of an RWMutex have another key prefix than its write holds and are
// refused as a mismatch: fence them with lock.RWFence. Semaphore permits
// are not ordered at all: guard etcd writes with fencing.Commit instead.
//
// # Schema
//
// Fence.CreateTable creates the table (default name DefaultTable), or run
// the DDL that Fence.Schema returns with your migrations:
//
//	CREATE TABLE IF NOT EXISTS etcdlock_fence (
//		resource  TEXT PRIMARY KEY,
//		lock_key  TEXT NOT NULL,
//		revision  BIGINT NOT NULL,
//		token_key TEXT NOT NULL
//	)
//
// # Programs that are not Go
//
// On PostgreSQL the DDL also installs etcdlock_fence_admit(resource,
// token_key, revision) (<table>_admit for another table name), which does
// what Admit does and raises an error when it refuses: SQLSTATE EL001 for a
// stale token, EL002 for another lock, 22023 for bad input. A job under
// `etcdlock run`, which finds its hold's key and token in $ETCDLOCK_KEY and
// $ETCDLOCK_TOKEN, fences its writes with psql in one statement, first in
// a transaction. With job.sql:
//
//	SELECT etcdlock_fence_admit('invoices', :'key', :'token');
//	UPDATE invoices SET state = 'sent' WHERE state = 'due';
//
// run
//
//	etcdlock run invoices -- sh -c 'exec psql -X -v ON_ERROR_STOP=1 --single-transaction \
//		-v key="$ETCDLOCK_KEY" -v token="$ETCDLOCK_TOKEN" -f job.sql'
//
// A stale job's SELECT fails, psql stops (exit status 3) and the
// transaction, its UPDATE included, is rolled back.
//
// # HTTP
//
// Store shares one high-water mark between the replicas of a service:
// package httpfence checks requests' tokens against it.
package sqlfence
