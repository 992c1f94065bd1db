package lock_test

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/etcdlock/etcdlock/lock"
)

// TestValidate checks that ValidateName and ValidateNamespace judge as the
// constructors do, with the same sentinels.
func TestValidate(t *testing.T) {
	for _, name := range []string{"", "\xff", strings.Repeat("x", lock.MaxNameLen+1)} {
		err := lock.ValidateName(name)
		if !errors.Is(err, lock.ErrInvalidName) || !strings.HasPrefix(err.Error(), "lock: ") {
			t.Errorf("ValidateName(%.10q) = %v, want ErrInvalidName with the package's prefix", name, err)
		}
	}
	for _, ns := range []string{"\xff", strings.Repeat("x", lock.MaxNamespaceLen+1)} {
		if err := lock.ValidateNamespace(ns); !errors.Is(err, lock.ErrInvalidNamespace) {
			t.Errorf("ValidateNamespace(%.10q) = %v, want ErrInvalidNamespace", ns, err)
		}
	}
	if err := errors.Join(lock.ValidateName("a/b"), lock.ValidateNamespace(""), lock.ValidateNamespace(lock.DefaultNamespace)); err != nil {
		t.Errorf("valid name or namespace refused: %v", err)
	}
	host, _ := os.Hostname()
	if got, want := lock.DefaultHolder(), host+":"+strconv.Itoa(os.Getpid()); got != want {
		t.Errorf("DefaultHolder() = %q, want %q", got, want)
	}
}
