package lock

import (
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/internal/config"
)

// Option configures a Mutex, RWMutex or Semaphore: one of the With
// functions below. The constructor reports an invalid value (or a nil
// Option) as ErrInvalidOption or ErrInvalidNamespace.
type Option interface{ config() config.Option }

type option config.Option

func (o option) config() config.Option { return config.Option(o) }

func opts(os []Option) []config.Option {
	out := make([]config.Option, len(os))
	for i, o := range os {
		if o != nil { // else nil, which the constructor refuses
			out[i] = o.config()
		}
	}
	return out
}

// WithSession makes holds use s's lease, so that many locks in a process
// share one lease and one renewal probe. The session stays the caller's:
// Close does not close it, and when it ends, every hold on it is lost and
// later acquires fail with ErrSessionExpired. Optional: by default the lock
// grants its own lease of WithTTL's TTL when first needed, replaces it if it
// expires, and revokes it at Close. Cannot be combined with WithTTL.
func WithSession(s *concurrency.Session) Option { return option(config.Session(s)) }

// WithTTL sets the TTL of the lease the lock grants itself: at least 1s and
// a whole number of seconds (etcd counts lease TTLs in seconds). The server
// may grant more (its minimum TTL). A holder that stops renewing for longer
// loses the lock. Optional, defaults to DefaultTTL (10s).
func WithTTL(ttl time.Duration) Option { return option(config.TTL(ttl)) }

// WithSafetyMargin sets how long before the server could expire the lease
// a hold is presumed lost: the hold's deadline is the send time of the last
// acknowledged renewal plus the TTL minus this margin. It must be positive
// and less than half the TTL. Optional, defaults to a fifth of the granted TTL.
func WithSafetyMargin(d time.Duration) Option { return option(config.Margin(d)) }

// WithNamespace sets the prefix of every key, e.g. "myapp/locks/"; a
// namespace without a trailing '/' gets one, so "myapp" puts the keys
// under "myapp/" (where an RBAC rule on "myapp/" covers them), not
// "myappmutex/...". "" puts them at the root. Optional, defaults to
// DefaultNamespace ("etcdlock/"). A client wrapped by etcd's
// namespace package works too, its prefix coming first, provided its KV,
// Watcher and Lease are all wrapped.
func WithNamespace(ns string) Option { return option(config.Namespace(ns)) }

// WithLogger logs state changes (acquired, lost, released) to lg. Optional,
// defaults to no logging.
func WithLogger(lg *zap.Logger) Option { return option(config.Logger(lg)) }

// WithHolder sets the value stored in each of the lock's keys, which status
// tools show; at most 4096 bytes. Optional, defaults to "hostname:pid".
func WithHolder(desc string) Option { return option(config.Value(desc)) }

// WithMinHold keeps every hold's name held for at least d after it was
// granted, even if it is unlocked sooner: an early Unlock keeps the key,
// moving it in one guarded Txn to a fresh lease whose TTL is the rest of d
// (rounded up to a whole second, and at least the server's minimum TTL),
// so a later acquirer waits out the rest and the key expires by itself,
// even if this process dies; its token and place in the queue stay. For a
// job that must run once per period on a fleet: TryLock, do the work,
// Unlock. Close deletes its holds' keys as usual, and a holder that dies
// still holding loses the name when its lease expires. d is measured by
// this process's monotonic clock and etcd's lease TTL, never by wall
// clocks compared across machines. Optional, defaults to no minimum.
func WithMinHold(d time.Duration) Option { return option(config.MinHold(d)) }

// WithMaxHold releases every hold at the latest d after it was granted,
// however its holder behaves: a timer of this process deletes the key
// (guarded, like Unlock) and ends the hold with a *LostError whose cause
// is ErrMaxHold. A process paused past d cannot run the timer, but then
// does not renew its lease either, which etcd expires within the TTL. d is
// measured by this process's monotonic clock. It must be positive and, with
// WithMinHold, at least the minimum. Optional, defaults to no maximum.
func WithMaxHold(d time.Duration) Option { return option(config.MaxHold(d)) }

// WithLockDelay makes a Mutex hold the lock back for d after an unclean
// loss: when its holder vanished without unlocking (its lease expired or
// was revoked, or its key was deleted by another client), the next holder
// is granted no sooner than d after the loss, so that writes of the lost
// holder still in flight can drain. A clean Unlock (or Close) hands off at
// once, as without it; so does an Unlock that failed, whose key the lease
// keeper deletes later on its behalf. The rule, its cost and its limits are in the
// README ("Lock-delay"); in short, d is rounded up to whole seconds and
// measured by etcd's lease clock from when the waiter next in line saw the
// loss, or when the next acquirer found it if nobody waited, and every
// process on the name must set it. Only a Mutex takes it
// (ErrInvalidOption otherwise); optional, defaults to no delay.
func WithLockDelay(d time.Duration) Option { return option(config.LockDelay(d)) }
