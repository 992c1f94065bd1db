package integration_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/integration"
)

// StartServer runs etcd in the process outside a test (a demo, a benchmark,
// a dev server); the caller closes it. In a test, NewServer or Shared does
// the same and closes it at cleanup.
func ExampleStartServer() {
	srv, err := integration.StartServer()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	cli, err := srv.NewClient()
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "greeting", "hello"); err != nil {
		log.Fatal(err)
	}
	resp, err := cli.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", resp.Kvs[0].Value)
	// Output: hello
}

// A Proxy between a client and the server cuts the client off while the
// server goes on: here a request times out during a pause and succeeds
// after it. PauseClient, BlackholeClient and the Faults schedule build on
// the same proxy.
func ExampleStartProxy() {
	srv, err := integration.StartServer()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	p, err := integration.StartProxy(srv.Endpoint())
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close() // after the client's Close, deferred below
	cli, err := srv.NewClient(func(cfg *clientv3.Config) { cfg.Endpoints = []string{p.Endpoint()} })
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	get := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := cli.Get(ctx, "k")
		return err
	}
	if err := get(10 * time.Second); err != nil { // connected
		log.Fatal(err)
	}
	p.Pause()
	err = get(200 * time.Millisecond)
	fmt.Println("paused:", errors.Is(err, context.DeadlineExceeded))
	p.Unpause()
	fmt.Println("unpaused:", get(10*time.Second))
	// Output:
	// paused: true
	// unpaused: <nil>
}

// StartCluster runs several members in the process outside a test; in a
// test, NewCluster does the same and closes them at cleanup. A member stops
// and restarts on the same endpoint and data, and catches up on what the
// others committed meanwhile.
func ExampleStartCluster() {
	c, err := integration.StartCluster(3, integration.WithoutFsync())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lead, err := c.WaitLeader(ctx)
	if err != nil {
		log.Fatal(err)
	}
	follower := c.Member((lead + 1) % 3)
	if err := follower.Stop(); err != nil {
		log.Fatal(err)
	}
	cli, err := c.NewClient() // of all members; requests go to running ones
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "k", "written while a follower was down"); err != nil {
		log.Fatal(err)
	}
	if err := follower.Restart(ctx); err != nil {
		log.Fatal(err)
	}
	one, err := follower.NewClient() // of the restarted member only
	if err != nil {
		log.Fatal(err)
	}
	defer one.Close()
	resp, err := one.Get(ctx, "k") // linearizable: the member has caught up
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", resp.Kvs[0].Value)
	// Output: written while a follower was down
}
