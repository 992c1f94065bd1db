// Package fencing lets a resource refuse work from a holder whose lock has
// passed to someone else.
//
// Every grant of an etcdlock lock, semaphore permit or leadership carries a
// Token: the holder's etcd key and that key's create revision. etcd's
// revision only ever grows, so a later Mutex hold, RWMutex write hold or
// election term of the same name always carries a larger token than the
// earlier ones. Read holds and semaphore permits are ordered less strictly:
// see lock.RWMutex and lock.Semaphore.
//
// # Why fencing
//
// A lease-based lock cannot stop a holder that was paused (a long GC, a
// stopped VM, a partition) from acting after its lease expired and the lock
// was granted to another process. No lock library can: the paused process
// does not know it was paused. What can be done is to make the resource
// refuse it. There are two ways:
//
//   - For data in etcd, commit writes in a transaction guarded by the
//     token's Cmp, which holds only while the holder's key still exists with
//     the token's revision. Commit does this and returns ErrFenced when the
//     hold is gone.
//   - For a resource outside etcd, keep the highest token seen and refuse any
//     access with a lower one. Fence does this in memory (RWFence for a
//     resource guarded by a lock.RWMutex, whose read holds overlap);
//     package fencing/sqlfence does it in a SQL database, inside the
//     caller's own transaction, and package fencing/httpfence in front of
//     an HTTP service. Neither is linked by a program that imports only
//     fencing.
//
// Fence reads as well as writes. A stale holder that reads, computes and
// writes can lose an update even when its write is checked, if a newer holder
// wrote in between and the stale holder's read was not refused.
package fencing
