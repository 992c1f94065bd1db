// Package nemesis is etcdlock's fault-injection suite: it runs workloads on
// the library's primitives on a 3-member embedded etcd cluster while a
// nemesis injects faults from a logged seed, records every grant and every
// access, and checks the histories against what the library promises.
//
// # What is promised, and checked
//
// No lease-based lock can promise that two processes never act at once: a
// holder paused past its TTL acts after its lease expired. What etcdlock
// promises, and what the checkers measure, is:
//
//  1. Grants (checker "grants"): a replay of a healthy watcher's events of
//     the lock keys, from the run's start revision, derives the true
//     holders at every revision by the lock's rule (mutex and election:
//     the oldest key; RWMutex: readers with no older writer, or a writer
//     with no older key; semaphore: keys whose older keys' permits plus
//     their own fit in the limit). Every grant the library reported must
//     carry its key's create revision as token and must have been true by
//     the revision of a linearizable read made right after it returned
//     (the revision of the library's own deciding read is not exposed, but
//     is at most that one); the reported holds alive at any revision never
//     exceed what the lock allows; a grant made after another hold ended
//     has a larger token; a reported hold's key is deleted only by its own
//     unlock or by its lease's end; and a holder whose lease ended under it
//     was told (Done closed) before the watcher saw its key deleted.
//  2. Linearizability (checker "porcupine"): the history of the protected
//     register is checked with porcupine against a fenced register: an
//     access is accepted only with a token at least the highest seen (for
//     an RWMutex reader, the highest writer token), and a read returns the
//     last accepted write. Calls that failed or timed out have an unknown
//     outcome (return time "infinity").
//  3. Counter (checker "counter"): every critical section increments a
//     counter by read-modify-write; no acknowledged increment may be lost.
//  4. Observe (checker "observe"): Election.Observe never goes back in time
//     and never reports a candidate that did not lead, or a value its
//     leader never had.
//
// Plus "cleanup": no key is left under a workload's namespace at its end.
//
// # Workloads, faults and validity
//
// Each workload (see AllWorkloads) runs several workers, each with its own
// client through its own proxies, so that client faults hit one worker.
// The unfenced controls (WorkloadControl, WorkloadSQLControl) are mutex
// workloads without fencing: they must lose updates when a holder pauses
// past its lease, and their lost updates and non-linearizable histories
// are reported, not counted as violations.
//
// The SQL workloads (WorkloadSQL and its control) keep their counter in a
// row of a SQLite database (modernc.org/sqlite, a file per run in a
// temporary directory, removed at the end). A holder reads it in one
// transaction and writes it in another, as a holder that computes between
// them would not keep SQLite's one write lock meanwhile; in WorkloadSQL
// each transaction begins with sqlfence's Admit of the hold's token, so
// the database itself refuses a holder that paused past its lease
// between its read and its write. Only this package links SQLite; the
// library's packages do not.
//
// A run goes through fault phases (see AllFaults), each with every
// workload on fresh keys: a fault-free warm-up, then one or more random
// schedules (integration.Schedule) of that phase's faults. A run is
// invalid, not passed, if a workload did too little before the first
// fault, a phase injected no fault into a workload, a holder's pause let
// no lease expire, the watcher's history has a gap, or porcupine timed out.
//
// # Seeded bugs
//
// After the phases, a targeted scenario per switch of internal/bugs runs
// once without the bug (it must pass every checker) and once with it (a
// checker must fail): see BugResult.Scenario in the report. The bugs are
// compiled in only with the build tag etcdlock_bugs (go test -tags
// etcdlock_bugs); without it Run skips this part and says so
// (Report.SeededBugsSkipped).
//
// Run is the entry point, for the tests of this package and for the
// maintainers' command internal/cmd/nemesis.
package nemesis
