package election

import (
	"github.com/etcdlock/etcdlock/internal/config"
	"github.com/etcdlock/etcdlock/metrics"
)

// WithMetrics reports the election's campaigns, the ends of its terms
// (resigned or lost, and why) and its lease's renewals to o, which must
// not block (see metrics.Observer); prommetrics.New makes one that exports
// them to Prometheus, with a leader gauge. Optional: by default nothing is
// measured. One o may serve many elections and locks; a nil o is
// ErrInvalidOption.
func WithMetrics(o metrics.Observer) Option { return option(config.Metrics(o)) }
