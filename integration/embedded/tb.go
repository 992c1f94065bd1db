package embedded

// TB is the part of testing.TB that the test helpers (NewServer,
// NewCluster, NewProxy, the Client methods) use: a *testing.T, *testing.B
// or testing.TB satisfies it. It keeps this package free of package
// testing, so that a program (etcdlock dev) links neither.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Name() string
	TempDir() string
}
