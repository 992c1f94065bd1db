//go:build tools

// Package etcdctl is a module of its own that pins etcdctl at the etcd
// version of etcdlock's go.mod, so that tests can build the real "etcdctl
// lock" (go build go.etcd.io/etcd/etcdctl/v3, run in this directory)
// without etcdctl entering the requirements of etcdlock's users. etcdctl's
// own go.mod has replace directives, so "go install ...@v3.7.3" refuses it.
package etcdctl

import _ "go.etcd.io/etcd/etcdctl/v3"
