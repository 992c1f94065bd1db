package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/lock"
)

// revokeCmd is "etcdlock revoke".
var revokeCmd = &command{
	name:      "revoke",
	summary:   "ask the holders of a lock, or the leader of an election, to release",
	usage:     "etcdlock revoke [flags] NAME",
	takesArgs: true,
	help: `
Revoke asks whoever holds NAME to release it: the holders of the mutex,
reader-writer lock and semaphore called NAME (etcdlock run, package lock)
and the leader of the election NAME (etcdlock elect, package election), or
only those of the kind --kind names. Waiters and candidates are not asked.
It prints one line per holder asked: its kind, token, key and value.

A request is a key beside the lock's queue, on the holder's lease, written
only while the holder's key is the one read; the holder sees it (a Hold's
ReleaseRequested, a Term's ResignRequested) and may release, or ignore it.
It is deleted when the hold ends. Revoke does not wait for the release:
follow it with "etcdlock status NAME".

The exit status is 0 when a holder was asked, 3 when nobody holds NAME, 2
for bad usage, 120 if etcd cannot be reached, and 1 for other failures.
` + connSeeAlso,
	setup: setupRevoke,
}

// exitNobody is revoke's exit status when nobody holds the name.
const exitNobody = 3

// revokeTimeout bounds revoke's requests once connected.
const revokeTimeout = 10 * time.Second

// setupRevoke defines revoke's flags.
func setupRevoke(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) int {
	var (
		conn cmdline.Conn
		kind string
		from string
	)
	conn.Register(fs)
	fs.StringVar(&kind, "kind", "all", "the `kind` of queue whose holders to ask: mutex, rw, sem, election or all")
	fs.StringVar(&from, "as", "", "tell the holders who asks (default host:pid)")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		name, kinds, code, ok := nameAndKinds("revoke", fs, kind, stdout, stderr)
		if !ok {
			return code
		}
		if len(from) > lock.MaxRequesterLen {
			return badUsage(stderr, "revoke", "--as: %d bytes, more than %d", len(from), lock.MaxRequesterLen)
		}
		if err := conn.Resolve(); err != nil {
			return report(stderr, "revoke", err, exitUsage)
		}
		cli, err := conn.Connect(ctx, keyPrefix(conn.Namespace, kinds[0], name))
		if err != nil {
			return report(stderr, "revoke", err, exitFailure)
		}
		defer cmdline.CloseQuietly(cli)
		rctx, cancel := context.WithTimeout(ctx, revokeTimeout)
		defer cancel()
		asked := 0
		for _, k := range kinds {
			if k == "election" {
				l, err := election.RequestResign(rctx, cli, conn.Namespace, name, from)
				switch {
				case errors.Is(err, election.ErrNoLeader):
					continue
				case err != nil:
					return report(stderr, "revoke", err, exitFailure)
				}
				fmt.Fprintf(stdout, "asked election leader: token %d, key %s, value %q\n", l.Token.Revision, l.Token.Key, l.Value)
				asked++
				continue
			}
			toks, err := lock.RequestRelease(rctx, cli, conn.Namespace, lock.Kind(k), name, from)
			switch {
			case errors.Is(err, lock.ErrNotHeld):
				continue
			case err != nil:
				return report(stderr, "revoke", err, exitFailure)
			}
			for _, t := range toks {
				fmt.Fprintf(stdout, "asked %s holder: token %d, key %s\n", k, t.Revision, t.Key)
				asked++
			}
		}
		if asked == 0 {
			fmt.Fprintf(stderr, "etcdlock revoke: nobody holds %q under %q\n", name, conn.Namespace)
			return exitNobody
		}
		return exitOK
	}
}

// nameAndKinds parses the NAME argument and the --kind flag (kind) of the
// command called cmd, status or revoke: the name and the queue kinds it
// names, or the exit status of a usage error and ok false.
func nameAndKinds(cmd string, fs *flag.FlagSet, kind string, stdout, stderr io.Writer) (name string, kinds []string, code int, ok bool) {
	names, code, ok := parseArgs(cmd, fs, 1, stdout, stderr, "NAME")
	if !ok {
		return "", nil, code, false
	}
	kinds = statusKinds
	if kind != "all" {
		if !slices.Contains(statusKinds, kind) {
			return "", nil, badUsage(stderr, cmd, "--kind must be mutex, rw, sem, election or all, not %q", kind), false
		}
		kinds = []string{kind}
	}
	if err := lock.ValidateName(names[0]); err != nil {
		return "", nil, badUsage(stderr, cmd, "NAME: %v", err), false
	}
	return names[0], kinds, exitOK, true
}
