// Package keys builds the etcd keys of etcdlock's queues.
//
// A queue lives under "<namespace><kind>/<escaped name>/", where a
// namespace that does not end in '/' gets one (see Namespace). The name is
// escaped so that it never contains '/', which keeps the key range of one
// lock from containing another's: lock "a" ranges over ".../a/" and lock
// "a/b" over ".../a%2Fb/".
package keys

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxNameLen is the longest name, in bytes, that a lock, semaphore or
// election may have.
const MaxNameLen = 512

// MaxNamespaceLen is the longest namespace prefix, in bytes.
const MaxNamespaceLen = 256

// DefaultNamespace is the prefix put before every key when none is given.
const DefaultNamespace = "etcdlock/"

var (
	// ErrInvalidName is returned for an empty name, a name longer than
	// MaxNameLen bytes or a name that is not valid UTF-8.
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidNamespace is returned for a namespace longer than
	// MaxNamespaceLen bytes or one that is not valid UTF-8.
	ErrInvalidNamespace = errors.New("invalid namespace")
)

// ValidateName reports whether name can name a lock.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidName, len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	}
	return nil
}

// ValidateNamespace reports whether ns can prefix keys.
func ValidateNamespace(ns string) error {
	switch {
	case len(ns) > MaxNamespaceLen:
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidNamespace, len(ns), MaxNamespaceLen)
	case !utf8.ValidString(ns):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidNamespace)
	}
	return nil
}

// Namespace returns ns as a key prefix: ns itself if it is empty or ends
// in '/', and otherwise ns + "/", so that "myapp" and "myapp/" name the same
// keys ("myapp/mutex/..."), which an RBAC rule on "myapp/" covers, as
// etcd's concurrency package makes "pfx/" of a lock prefix "pfx". It is
// idempotent.
func Namespace(ns string) string {
	if ns == "" || strings.HasSuffix(ns, "/") {
		return ns
	}
	return ns + "/"
}

// Escape returns name with '%', '/' and control characters percent-encoded,
// so the result never contains '/'.
func Escape(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '%' || c == '/' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Unescape reverses Escape.
func Unescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("%w: bad escape in %q", ErrInvalidName, s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("%w: bad escape in %q", ErrInvalidName, s)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// Prefix returns the queue prefix of name for kind ("mutex", "rw", "sem",
// "election") under namespace (see Namespace), ending in '/'.
func Prefix(namespace, kind, name string) string {
	return Namespace(namespace) + kind + "/" + Escape(name) + "/"
}

// Waiter returns a fresh waiter key under prefix for lease. The key names
// the lease, so status tools can show it, and a random part, so two waiters
// on one lease and one name never share a key.
func Waiter(prefix string, lease clientv3.LeaseID) string {
	return fmt.Sprintf("%s%016x-%016x", prefix, int64(lease), rand.Uint64())
}

// Holder describes this process, for the value of a waiter key when the
// caller gives none: "host:pid".
func Holder() string {
	h, err := os.Hostname()
	if err != nil {
		h = "unknown"
	}
	return h + ":" + strconv.Itoa(os.Getpid())
}

// Slot returns the key of slot n of a pool of lease under prefix. Slots are
// reused once their key is gone, so a long-lived process does not leave a
// trail of distinct deleted keys (each of which etcd keeps, and every range
// over the queue walks, until compaction). pool is random per pool, so that
// two pools on one lease (two Mutex values on one session) never make the
// same key.
func Slot(prefix string, lease clientv3.LeaseID, pool uint32, n int64) string {
	return fmt.Sprintf("%s%016x-%08x%x", prefix, int64(lease), pool, n)
}

// NewPool returns a pool number for Slot: never the same twice in one
// process (until 2^32 pools), and starting at a random number so that
// processes sharing a lease are unlikely to collide either.
func NewPool() uint32 { return poolBase + nextPool.Add(1) }

var (
	poolBase = rand.Uint32()
	nextPool atomic.Uint32
)
