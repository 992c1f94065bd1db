// Package authtest tests the locks, elections and fences of this module
// against etcd servers and clusters that require TLS client certificates
// and authentication, as a user allowed to read and write one key prefix
// only, and as users with too little permission. It has no API.
//
// Such a user needs read and write permission on the keys under the
// namespace (the Range, Txn, Put, DeleteRange and Watch requests, and
// LeaseKeepAlive, LeaseRevoke and LeaseTimeToLive, which etcd checks
// against the keys attached to the lease); LeaseGrant needs only a
// logged-in user. Without it, calls fail promptly with an error matching
// rpctypes.ErrPermissionDenied (or rpctypes.ErrUserEmpty when no user
// logged in) and leave neither keys nor leases behind.
package authtest
