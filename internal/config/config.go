// Package config holds the options shared by every etcdlock primitive and
// their validation.
package config

import (
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/metrics"
)

// Defaults.
const (
	DefaultTTL = 10 * time.Second
	// MaxTTL is etcd's largest lease TTL.
	MaxTTL = 9_000_000_000 * time.Second
	// MaxValueLen bounds the holder description stored in each key.
	MaxValueLen = 4096
)

var (
	// ErrInvalidOption is returned by constructors for an option value
	// that makes no sense; the error text says which.
	ErrInvalidOption = errors.New("invalid option")
	// ErrNilClient is returned by constructors given a nil client.
	ErrNilClient = errors.New("nil etcd client")
)

// Config is the validated configuration of one primitive.
type Config struct {
	Session   *concurrency.Session
	TTL       time.Duration
	Margin    time.Duration
	Namespace string
	Logger    *zap.Logger
	Value     string
	// MinHold and MaxHold bound how long a hold keeps the name (0: no
	// bound); see package lock's WithMinHold and WithMaxHold.
	MinHold time.Duration
	MaxHold time.Duration
	// Metrics, if set, receives the primitive's events (see metrics.go).
	Metrics metrics.Observer
	// LockDelay holds a lock back after an unclean loss (0: not); see
	// package lock's WithLockDelay.
	LockDelay time.Duration

	ttlSet    bool
	marginSet bool
	valueSet  bool
	errs      []error
}

// Option sets one field; invalid values are reported by Build.
type Option func(*Config)

// nopLogger is the logger of a Config given none: one for all, as a
// process may build many.
var nopLogger = zap.NewNop()

// Session uses s's lease.
func Session(s *concurrency.Session) Option {
	return func(c *Config) {
		if s == nil {
			c.errs = append(c.errs, fmt.Errorf("%w: nil session", ErrInvalidOption))
		}
		c.Session = s
	}
}

// TTL sets the TTL of leases the primitive grants.
func TTL(d time.Duration) Option {
	return func(c *Config) {
		switch {
		case d < time.Second:
			c.errs = append(c.errs, fmt.Errorf("%w: TTL %v is less than 1s", ErrInvalidOption, d))
		case d%time.Second != 0:
			c.errs = append(c.errs, fmt.Errorf("%w: TTL %v is not a whole number of seconds (etcd leases count seconds)", ErrInvalidOption, d))
		case d > MaxTTL:
			c.errs = append(c.errs, fmt.Errorf("%w: TTL %v is more than etcd's maximum", ErrInvalidOption, d))
		}
		c.TTL, c.ttlSet = d, true
	}
}

// Margin sets the safety margin taken off every lease deadline.
func Margin(d time.Duration) Option {
	return func(c *Config) {
		if d <= 0 { // 0 would trust the clocks and the network to the nanosecond
			c.errs = append(c.errs, fmt.Errorf("%w: safety margin %v is not positive", ErrInvalidOption, d))
		}
		c.Margin, c.marginSet = d, true
	}
}

// Namespace sets the key prefix, with a '/' appended if it lacks one (see
// keys.Namespace).
func Namespace(ns string) Option {
	return func(c *Config) {
		if err := keys.ValidateNamespace(ns); err != nil {
			c.errs = append(c.errs, err)
		}
		c.Namespace = keys.Namespace(ns)
	}
}

// Logger sets the logger; nil means none.
func Logger(lg *zap.Logger) Option {
	return func(c *Config) { c.Logger = lg }
}

// Value sets the holder description stored in each key.
func Value(v string) Option {
	return func(c *Config) {
		if len(v) > MaxValueLen {
			c.errs = append(c.errs, fmt.Errorf("%w: holder description of %d bytes, more than %d", ErrInvalidOption, len(v), MaxValueLen))
		}
		c.Value, c.valueSet = v, true
	}
}

// MinHold keeps a name held for at least d after it was granted.
func MinHold(d time.Duration) Option {
	return func(c *Config) {
		if d <= 0 || d > MaxTTL {
			c.errs = append(c.errs, fmt.Errorf("%w: minimum hold %v is not in (0, %v]", ErrInvalidOption, d, MaxTTL))
		}
		c.MinHold = d
	}
}

// MaxHold releases a hold at the latest d after it was granted.
func MaxHold(d time.Duration) Option {
	return func(c *Config) {
		if d <= 0 {
			c.errs = append(c.errs, fmt.Errorf("%w: maximum hold %v is not positive", ErrInvalidOption, d))
		}
		c.MaxHold = d
	}
}

// LockDelay holds a lock back for d after an unclean loss.
func LockDelay(d time.Duration) Option {
	return func(c *Config) {
		if d <= 0 || d > MaxTTL {
			c.errs = append(c.errs, fmt.Errorf("%w: lock-delay %v is not in (0, %v]", ErrInvalidOption, d, MaxTTL))
		}
		c.LockDelay = d
	}
}

// Build applies opts over the defaults and validates the result.
func Build(cli *clientv3.Client, name string, opts []Option) (*Config, error) {
	if cli == nil {
		return nil, ErrNilClient
	}
	if err := keys.ValidateName(name); err != nil {
		return nil, err
	}
	c := &Config{TTL: DefaultTTL, Namespace: keys.DefaultNamespace}
	for _, o := range opts {
		if o == nil {
			c.errs = append(c.errs, fmt.Errorf("%w: nil option", ErrInvalidOption))
			continue
		}
		o(c)
	}
	if c.Session != nil && c.ttlSet {
		c.errs = append(c.errs, fmt.Errorf("%w: TTL is set by the session; give one or the other", ErrInvalidOption))
	}
	if c.Session == nil && c.marginSet && c.Margin*2 >= c.TTL {
		c.errs = append(c.errs, fmt.Errorf("%w: safety margin %v is not less than half the TTL %v", ErrInvalidOption, c.Margin, c.TTL))
	}
	if c.MinHold > 0 && c.MaxHold > 0 && c.MinHold > c.MaxHold {
		c.errs = append(c.errs, fmt.Errorf("%w: minimum hold %v is more than the maximum %v", ErrInvalidOption, c.MinHold, c.MaxHold))
	}
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	if c.Logger == nil {
		c.Logger = nopLogger
	}
	if !c.valueSet {
		c.Value = keys.Holder()
	}
	return c, nil
}
