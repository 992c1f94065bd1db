// Package embedded runs embedded etcd servers and clusters inside a Go
// process and injects faults between clients and members: what package
// integration offers, without the helpers only tests use (Main, Shared,
// Namespace, RequireEmpty). A program may import it without linking
// package testing or goleak; etcdlock dev and demo do. Its constructors
// that take a TB (NewServer, NewCluster, NewProxy) are for tests, and take
// a *testing.T. See package integration for the servers' layout, TLS,
// authentication and faults.
package embedded
