// Package integration runs embedded etcd servers and clusters inside a Go
// process, for the tests of this module and for the tests of its users, and
// injects faults between clients and members.
//
// The servers, clusters, proxies and faults are those of package
// integration/embedded, under the same names here; a program (etcdlock dev
// and demo) imports that package, which links neither package testing nor
// goleak. This package adds what only tests use: Main, Shared, Namespace,
// RequireEmpty, WaitKeyCount and StartExample.
//
// # Servers and clusters
//
// [NewServer] and [NewCluster] start one member or n members from inside a
// test and stop them at test cleanup; [StartServer] and [StartCluster] do the
// same outside tests (the caller calls Close). Members use fast raft timing
// (10 ms heartbeat, 100 ms election timeout) and are ready before the
// constructors return: typically within 100 ms for one member and a few
// hundred milliseconds for three (with the race detector and fsync on).
//
// By default nothing listens on TCP, so tests never race for ports:
//
//   - client URLs are unix sockets at absolute paths in a short directory
//     made by os.MkdirTemp("", "etcdlock") and removed at Close (clients dial
//     "unix:///tmp/etcdlockNNN/etcd.sock" for a single [Server], and
//     ".../m0.sock", ".../m1.sock" and so on for the members of a [Cluster]);
//   - cluster peer URLs are unix sockets too. etcd's peer transport only
//     dials the host part of a URL, so a peer socket cannot live at an
//     absolute path: the peer sockets of a [Cluster] are created in the
//     process's working directory (the package directory under go test) with
//     names like "etcdlock-<pid>-<n>-m0:2380", and removed when the member
//     stops and at Close. A crashed test binary can leave them behind; add
//     "etcdlock-*:2380" to .gitignore if that matters. Do not change the
//     working directory (os.Chdir, t.Chdir) while a cluster runs. A single
//     [Server] does not listen for peers at all.
//
// [WithClientURL] makes a single server listen on TCP instead (for a
// development server, e.g. "http://127.0.0.1:2379").
//
// # TLS and authentication
//
// [WithTLS] makes the members serve clients over TLS only, with a CA and
// certificates made at start (crypto/x509, nothing read from outside) and
// client certificates required: client URLs become
// "unixs:///tmp/etcdlockNNN/etcd.sock" (or https with [WithClientURL]), and
// [Server.TLS] names the CA file and a client certificate and key to hand
// to other programs. [WithAuth] turns etcd's authentication on, with the
// user [RootUser]; [AddPrefixUser] adds a user who may read and write one
// key prefix only. The clients this package makes present the client
// certificate and log in as [RootUser], so [Shared]-style helpers such as
// [RequireEmpty] work unchanged.
//
// A member whose server reports an error after it started (a client or peer
// listener whose Serve failed, say) keeps running, and its clients then
// typically time out. [Member.Err] and [Server.Err] return that error,
// [NewServer] and [NewCluster] fail the test with it at cleanup, naming the
// member, and [Main] fails the test binary with that of the [Shared]
// server. Stopping or closing a member on purpose is no such error.
//
// # Faults
//
// [Proxy] sits between a client and an endpoint (built on
// go.etcd.io/etcd/pkg/v3/proxy) and can hold ([Proxy.Pause]) or drop
// ([Proxy.Blackhole]) traffic in both directions, drop requests only
// ([Proxy.BlackholeRequests]) or delay responses ([Proxy.DelayResponses]).
// Its faults nest, so that overlapping faults can share a proxy: each one's
// undo ends only its own part, and the effect lasts until the last
// overlapping fault ends. [Cluster.Isolate] and [Cluster.Heal] partition a
// member from its peers at the raft transport (partitions nest too: a link
// stays cut while any partition wants it), [Member.Stop], [Member.HardStop]
// and [Member.Restart] stop a member and start it again on the same URLs
// and data, and [Cluster.MoveLeader] transfers leadership.
//
// [Faults] bundles these into faults that undo themselves, and only
// themselves, when they end (restart a member or the leader, partition the
// leader, move leadership, pause a member's sending, compact), and
// [PauseClient], [BlackholeClient], [DelayClientResponses] and
// [DropClientRequests] act on clients' proxies. A [Schedule] runs a random
// sequence of [Fault]s from a logged seed, and gives up on a fault that has
// not returned after [Schedule.StuckAfter], so that a hang inside etcd
// fails the run instead of holding it forever.
//
// # Test suites
//
// A package's TestMain calls [Main]; tests then share one lazily started
// server through [Shared], keep their keys apart with [Namespace], and check
// they cleaned up with [RequireEmpty]. Main checks for goroutine leaks after
// the tests; packages with their own TestMain can use [GoleakOptions].
// [Server.CountingClient] counts the calls a client starts, to check that
// a call sent nothing or how many round trips it took.
//
//	func TestMain(m *testing.M) { integration.Main(m) }
//
//	func TestX(t *testing.T) {
//		t.Parallel()
//		cli := integration.Shared(t).Client(t)
//		ns := integration.Namespace(t)
//		// ... use keys under ns ...
//		integration.RequireEmpty(t, cli, ns)
//	}
//
// Unless stated otherwise, methods of [Server], [Cluster], [Member] and
// [Proxy] are safe for concurrent use.
package integration
