// Package procnemesis is etcdlock's fault-injection suite at the level of
// processes: three etcd server processes with fsync on, holders that are
// processes of their own (a worker binary using lock.Mutex, and `etcdlock
// run` around a shell job), and a nemesis that sends them signals and cuts
// the links between members.
//
// # Safety model
//
// A lease-based lock cannot stop a paused holder from acting after its
// lease expired: a process frozen by the operating system (SIGSTOP here; a
// GC pause or a stopped VM in production) does not know it was frozen, and
// when it resumes it finishes its critical section. The fencing token (the
// lock key's create revision, which only ever grows) makes the resource
// refuse it. The suite freezes holders in the middle of their critical
// sections for longer than their TTL and checks that the fenced resources
// refused every write they made after they resumed, while the unfenced
// control, written by the same critical sections, loses updates.
//
// # The cluster
//
// The suite builds, into a temporary directory, a small main on etcd's own
// server code (internal/cmd/etcdserver, go.etcd.io/etcd/server/v3 at the
// version go.mod pins), the holder binary (internal/cmd/lockworker) and
// cmd/etcdlock, without the race detector. It starts three members on
// 127.0.0.1 with free ports, each with its data dir, fsync on.
//
// Partitions: each member advertises, as its peer URL, a proxy of the
// suite in front of its own peer listener, so every peer call to it
// passes that proxy: raft messages, and the peer API calls that name no
// sender (version checks, lease renewals forwarded to the leader). The
// proxy tells the sending member of each connection by the process at its
// other end (the kernel's socket table, /proc/net/tcp, gives the socket's
// inode, and the member whose /proc/PID/fd holds it is the sender), so it
// refuses, and disconnects, every connection from a member whose link is
// cut: a cut link drops every call between the two members, in both
// directions, while their links to the third member carry on.
//
// # Holders
//
// Shards of lockworker processes each contend for a lock.Mutex (16 locks
// of 3 workers by default, every checker run on each); each critical
// section reads three counters, reaches a pause point, and writes each
// counter it read plus one: one in etcd written through fencing.Commit,
// one in SQLite admitted by fencing/sqlfence (a database file shared by
// every holder, opened with _txlock=immediate and a busy timeout), and an
// unfenced control in etcd. The registers are independent, so the etcd
// and SQL reads go out together, and so do the writes; the control's put
// rides in the fenced write's Txn, in both branches, so it is written
// whatever the fence says. A section costs the Lock's round trips, one
// read, one write and the Unlock in etcd. An Unlock that etcd does not
// answer within a quarter of the TTL is retried after the next Lock, on
// the same lease. Beside them, loops of `etcdlock run` run the same
// critical section as a shell job (sh running `lockworker job`), on the
// run's own lock and counters.
//
// Workers reach etcd through links of their own: a proxy of the suite in
// front of each member's client URL, which can delay the member's answers
// (each chunk by the same latency) and drop the worker's requests.
//
// Each holder appends its history to a file of its own (package record):
// grants, every access's call and return, unlocks, and Done's closing.
// Times are nanoseconds since the run's start on the host's wall clock,
// which every process of the host reads alike (the watcher's times are
// taken on the suite's monotonic clock from the same start; the report
// gives the two clocks' drift over the run).
//
// # Faults
//
// Two nemeses run at once. The member nemesis SIGKILLs a member (the
// leader half the time) and restarts it on its data dir, SIGSTOPs and
// SIGCONTs a member, isolates a member or cuts one link, and compacts the
// history below what the watcher has read. The holder nemesis freezes a
// worker with SIGSTOP at its pause point (the worker stops itself when
// asked with SIGUSR1, so that the freeze lands between its reads and its
// writes) and resumes it only after at least twice its TTL and once the
// lock has been granted to a newer holder that has been admitted by the
// SQL fence; it SIGKILLs workers (and starts new ones), and SIGKILLs
// `etcdlock run` processes in the middle of their jobs. It also makes a
// worker slow (see suite.slow): its answers late, so that its Unlocks
// time out after they landed; then, asked with SIGHUP, it lingers at its
// pause point as a long job watching its hold's Done, its answers late
// again, and its requests are dropped until its lease expires while it
// holds. No member fault runs during that last part, so that what delays
// its renewals is its link alone.
//
// Workers give up each wait for their lock after a random time up to two
// TTLs and queue again, so that waiters leave the queue while a frozen
// holder holds it. With Config.Bug every worker runs with a planted bug
// (internal/bugs; the binaries are then built with -tags etcdlock_bugs)
// and the run must find violations; TestPlantedBugs catches each of the
// four: LeaseIDToken (every token), SkipOwnershipCheck (a waiter behind
// one that gave up, while a frozen holder holds), UnlockByName (an Unlock
// that timed out after it landed, retried after the next Lock on the same
// lease, deletes that newer hold) and ReceiveTimeDeadline (the slow
// holder is told of its lease's end late; TTL 4 s and its answers 40% of
// it late, so that the lateness is past the checker's tolerance). The
// last two runs make only slow holders.
//
// # What is checked
//
// The checkers of internal/nemesis: true holders from a replay of a
// healthy watcher's events (grants), porcupine on each fenced register,
// and lost updates in each counter chain; plus every frozen holder's late
// writes were refused by both fences, and no child of a killed `etcdlock
// run` outlived it (the sh and the job it ran are gone within 5 seconds).
// A holder that was frozen is deemed told of its loss when it froze (it
// can act on nothing until it resumes, and what it does then is what the
// fences must refuse); a holder that was killed is deemed to have let go
// when it died. No process of the run is left at its end.
//
// # Leases etcd ends early
//
// The library tells a holder of its loss by a deadline timed from the
// send of the last renewal etcd answered, which comes before etcd may
// expire the lease, if etcd keeps the leases it acknowledged. etcd does
// not always: a leader SIGSTOPped (or cut off while it goes on ticking)
// answers renewals the next leader never sees, and once it resumes it
// proposes the revocation of every lease that looks expired from its
// stale view, which it forwards to the new leader once it has stepped
// down (etcd-io/etcd#15247, #12528; the check etcd added before revoking
// is skipped while the member's raft loop ticks, as it does right after a
// SIGCONT). The suite's stop-member and isolate-member faults produce it.
// Each worker records, at its client's gRPC boundary (not from the
// library), until when etcd has acknowledged its lease: the send time of
// each answered keep-alive plus the TTL answered. A lease whose end the
// watcher saw before then, etcd ended early: the checker counts it apart
// (Report.EarlyRevocations), not as a violation, provided its holder was
// told by the acknowledged end; the fences must have refused what the
// holder wrote meanwhile, as the register checkers verify. A keeper that
// times its deadline wrongly (the planted bug ReceiveTimeDeadline) cannot
// pass its lateness off as etcd's, since the acknowledgement is measured
// apart from it.
//
// Config.Trace (procnemesis -trace) keeps what such a case needs to be
// explained: the members' logs at info level, the workers' library logs
// with every renewal (sent, answered, member, raft term) and the
// watcher's events.
package procnemesis
