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
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.Endpoint()}, DialTimeout: 5 * time.Second})
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
