package metrics_test

import (
	"testing"

	"github.com/etcdlock/etcdlock/integration"
)

// TestMain fails the package's tests if they leave goroutines behind.
func TestMain(m *testing.M) { integration.Main(m) }
