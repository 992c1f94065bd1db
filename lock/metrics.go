package lock

import (
	"github.com/etcdlock/etcdlock/internal/config"
	"github.com/etcdlock/etcdlock/metrics"
)

// WithMetrics reports the lock's acquires, the ends of its holds (released
// or lost, and why) and its lease's renewals to o, which must not block
// (see metrics.Observer); prommetrics.New makes one that exports them to
// Prometheus. Optional: by default nothing is measured. One o may serve
// many locks and elections; a nil o is ErrInvalidOption.
func WithMetrics(o metrics.Observer) Option { return option(config.Metrics(o)) }
