package election

import (
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/internal/config"
)

// Option configures an Election: one of the With functions below. New
// reports an invalid value (or a nil Option) as ErrInvalidOption or
// ErrInvalidNamespace.
type Option interface{ config() config.Option }

type option config.Option

func (o option) config() config.Option { return config.Option(o) }

func opts(os []Option) []config.Option {
	out := make([]config.Option, len(os))
	for i, o := range os {
		if o != nil { // else nil, which New refuses
			out[i] = o.config()
		}
	}
	return out
}

// WithSession campaigns on s's lease. The session stays the caller's: Close
// does not close it, and when it ends every term on it is lost and later
// campaigns fail with ErrSessionExpired. Optional: by default the Election
// grants its own lease of WithTTL's TTL when first needed, replaces it when
// it expires, and revokes it at Close. Cannot be combined with WithTTL.
func WithSession(s *concurrency.Session) Option { return option(config.Session(s)) }

// WithTTL sets the TTL of the lease the Election grants itself: at least 1s
// and a whole number of seconds. After a leader's process dies, a standby
// leads about one TTL later. Optional, defaults to DefaultTTL (10s).
func WithTTL(ttl time.Duration) Option { return option(config.TTL(ttl)) }

// WithSafetyMargin sets how long before the server could expire the lease a
// term is presumed lost: positive and less than half the TTL. Optional,
// defaults to a fifth of the granted TTL.
func WithSafetyMargin(d time.Duration) Option { return option(config.Margin(d)) }

// WithNamespace sets the prefix of every key; a namespace without a
// trailing '/' gets one, so "myapp" puts the keys under
// "myapp/election/...". Optional, defaults to
// DefaultNamespace ("etcdlock/"). A client wrapped by etcd's namespace
// package works too, its prefix coming first, provided its KV, Watcher and
// Lease are all wrapped.
func WithNamespace(ns string) Option { return option(config.Namespace(ns)) }

// WithLogger logs state changes (elected, lost, resigned, hazards) to lg.
// Optional, defaults to no logging.
func WithLogger(lg *zap.Logger) Option { return option(config.Logger(lg)) }
