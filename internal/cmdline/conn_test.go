package cmdline

import (
	"context"
	"flag"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if they leave goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConnFlags checks the environment fallbacks and the password sources.
func TestConnFlags(t *testing.T) {
	parse := func(env map[string]string, args ...string) (*Conn, error) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c := &Conn{Getenv: func(k string) string { return env[k] }}
		c.Register(fs)
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		return c, c.Resolve()
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		eps  []string
		ns   string
	}{
		{nil, nil, []string{"127.0.0.1:2379"}, "etcdlock/"},
		{map[string]string{"ETCDCTL_ENDPOINTS": "a:1"}, nil, []string{"a:1"}, "etcdlock/"},
		{map[string]string{"ETCDCTL_ENDPOINTS": "a:1", "ETCDLOCK_ENDPOINTS": "b:1, c:1"}, nil, []string{"b:1", "c:1"}, "etcdlock/"},
		{map[string]string{"ETCDLOCK_ENDPOINTS": "b:1", "ETCDLOCK_NAMESPACE": "app/"}, []string{"--endpoints", "d:1"}, []string{"d:1"}, "app/"},
	} {
		c, err := parse(tc.env, tc.args...)
		if err != nil {
			t.Fatalf("%v %q: %v", tc.env, tc.args, err)
		}
		if !slices.Equal(c.EndpointList(), tc.eps) || c.Namespace != tc.ns {
			t.Errorf("%v %q: endpoints %q namespace %q, want %q %q", tc.env, tc.args, c.EndpointList(), c.Namespace, tc.eps, tc.ns)
		}
	}
	ctx := context.Background()
	c, err := parse(map[string]string{"ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": "p1", "ETCDCTL_DIAL_TIMEOUT": "7s"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := c.Config(ctx)
	if err != nil || cfg.Username != "root" || cfg.Password != "p1" || cfg.DialTimeout != 7*time.Second {
		t.Errorf("user from the environment: %+v, %v", cfg, err)
	}
	c, _ = parse(map[string]string{"ETCDLOCK_PASSWORD": "p2", "ETCDCTL_PASSWORD": "p1"}, "--user", "u")
	if cfg, err := c.Config(ctx); err != nil || cfg.Username != "u" || cfg.Password != "p2" {
		t.Errorf("--user u with $ETCDLOCK_PASSWORD: %+v, %v", cfg, err)
	}
	c, _ = parse(nil, "--user", "u:p:3")
	if cfg, err := c.Config(ctx); err != nil || cfg.Username != "u" || cfg.Password != "p:3" {
		t.Errorf("--user u:p:3: %+v, %v", cfg, err)
	}
	for _, args := range [][]string{{"--endpoints", " , "}, {"--dial-timeout", "0s"}, {"--cert", "x"}} {
		if _, err := parse(nil, args...); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
