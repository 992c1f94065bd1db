package embedded

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The root user that [WithAuth] creates. Clients made by [Server.Client],
// [Cluster.Client], [Member.Client] and their NewClient log in as it.
const (
	RootUser     = "root"
	RootPassword = "etcdlock-root-password"
)

// enableAuth creates the root user, with etcd's root role, and turns
// authentication on, unless it is on already (a data directory reused).
func enableAuth(ctx context.Context, endpoints []string, cfg *config) error {
	cli, err := newClient(endpoints, cfg, []func(*clientv3.Config){func(c *clientv3.Config) {
		c.Username, c.Password = "", ""
	}})
	if err != nil {
		return fmt.Errorf("integration: enabling authentication: %w", err)
	}
	defer cli.Close()
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("integration: enabling authentication: %w", err)
	}
	if st.Enabled {
		return nil
	}
	if _, err := cli.UserAdd(ctx, RootUser, RootPassword); err != nil {
		return fmt.Errorf("integration: adding user %s: %w", RootUser, err)
	}
	if _, err := cli.UserGrantRole(ctx, RootUser, "root"); err != nil {
		return fmt.Errorf("integration: granting user %s the root role: %w", RootUser, err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("integration: enabling authentication: %w", err)
	}
	return nil
}

// AddPrefixUser creates the user name with password, and a role of the
// same name that grants read and write on the keys that start with prefix
// and on nothing else, through root, a client logged in as a user allowed
// to manage users (the root user of [WithAuth]). It blocks until etcd
// answers or ctx ends, and returns etcd's error or ctx's. Such a user can
// use a lock, an election or a fence of this module whose namespace
// starts with prefix: etcd asks for no permission to grant a lease, and
// for write permission on the lease's keys to renew or revoke it.
func AddPrefixUser(ctx context.Context, root *clientv3.Client, name, password, prefix string) error {
	if prefix == "" {
		return fmt.Errorf("integration: user %s: empty prefix", name)
	}
	if _, err := root.RoleAdd(ctx, name); err != nil {
		return fmt.Errorf("integration: adding role %s: %w", name, err)
	}
	if _, err := root.RoleGrantPermission(ctx, name, prefix, clientv3.GetPrefixRangeEnd(prefix),
		clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		return fmt.Errorf("integration: granting role %s readwrite on %q: %w", name, prefix, err)
	}
	if _, err := root.UserAdd(ctx, name, password); err != nil {
		return fmt.Errorf("integration: adding user %s: %w", name, err)
	}
	if _, err := root.UserGrantRole(ctx, name, name); err != nil {
		return fmt.Errorf("integration: granting user %s role %s: %w", name, name, err)
	}
	return nil
}
