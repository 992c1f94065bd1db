// Command etcdserver runs one etcd member from etcd's own server code
// (go.etcd.io/etcd/server/v3/embed) at the version go.mod pins, with fsync
// on, for the process-level fault suite (internal/procnemesis). It is a
// maintainer's tool, not part of etcdlock.
//
// It prints "ready <member ID in hex>" on stdout once the member serves
// clients, and runs until SIGTERM or SIGINT (a clean stop, exit 0), until
// etcd fails (exit 1), or until it is killed.
//
//	etcdserver -name m0 -data-dir /tmp/m0 \
//		-listen-client http://127.0.0.1:2379 -listen-peer http://127.0.0.1:2380 \
//		-advertise-peer http://127.0.0.1:12380 \
//		-initial-cluster m0=http://127.0.0.1:12380,m1=...,m2=...
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		name, dir, client, peer, advertise, initial, token, logLevel string
		snapshotCount                                                uint64
	)
	flag.StringVar(&name, "name", "", "the member's `name`")
	flag.StringVar(&dir, "data-dir", "", "the member's data `directory`")
	flag.StringVar(&client, "listen-client", "", "client `URL` to listen on and advertise")
	flag.StringVar(&peer, "listen-peer", "", "peer `URL` to listen on")
	flag.StringVar(&advertise, "advertise-peer", "", "peer `URL` the other members dial (default -listen-peer)")
	flag.StringVar(&initial, "initial-cluster", "", "name=peerURL,... of every member")
	flag.StringVar(&token, "token", "etcdlock-procnemesis", "initial cluster `token`")
	flag.StringVar(&logLevel, "log-level", "error", "etcd's log `level`")
	flag.Uint64Var(&snapshotCount, "snapshot-count", 5000, "committed entries between raft snapshots")
	flag.Parse()
	if name == "" || dir == "" || client == "" || peer == "" || initial == "" {
		fmt.Fprintln(os.Stderr, "etcdserver: -name, -data-dir, -listen-client, -listen-peer and -initial-cluster are required")
		return 2
	}
	if advertise == "" {
		advertise = peer
	}
	urls := func(s string) []url.URL {
		u, err := url.Parse(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcdserver: bad URL %q: %v\n", s, err)
			os.Exit(2)
		}
		return []url.URL{*u}
	}
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenClientUrls = urls(client)
	cfg.AdvertiseClientUrls = urls(client)
	cfg.ListenPeerUrls = urls(peer)
	cfg.AdvertisePeerUrls = urls(advertise)
	cfg.InitialCluster = initial
	cfg.InitialClusterToken = token
	cfg.ClusterState = embed.ClusterStateFlagNew // ignored once the data dir is initialized
	cfg.UnsafeNoFsync = false                    // the point: durability as in production
	cfg.SnapshotCount = snapshotCount
	cfg.LogLevel = logLevel
	cfg.LogOutputs = []string{"stderr"}
	if n := strings.Count(initial, "="); n == 0 {
		fmt.Fprintln(os.Stderr, "etcdserver: -initial-cluster names no member")
		return 2
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdserver: %v\n", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Printf("ready %s\n", e.Server.MemberID())
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcdserver: %v\n", err)
		return 1
	case <-sigs:
		return 0
	case <-time.After(5 * time.Minute):
		fmt.Fprintln(os.Stderr, "etcdserver: not ready after 5 minutes")
		return 1
	}
	select {
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcdserver: %v\n", err)
		return 1
	case <-sigs:
		return 0
	}
}
