package config

import (
	"fmt"

	"github.com/etcdlock/etcdlock/metrics"
)

// Metrics has the primitive report its events to o.
func Metrics(o metrics.Observer) Option {
	return func(c *Config) {
		if o == nil {
			c.errs = append(c.errs, fmt.Errorf("%w: nil metrics observer", ErrInvalidOption))
		}
		c.Metrics = o
	}
}
