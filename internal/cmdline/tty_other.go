//go:build !linux

package cmdline

import "context"

// promptPassword would ask for the password on the terminal; turning echo
// off is implemented on Linux only.
func promptPassword(ctx context.Context, user string) (string, error) {
	return "", UsageError("no password for user %q: set $ETCDLOCK_PASSWORD (etcdlock asks on the terminal on Linux only)", user)
}
