package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// versionCmd is "etcdlock version".
var versionCmd = &command{
	name:    "version",
	summary: "print etcdlock's version and that of its etcd client",
	usage:   "etcdlock version",
	help: `
Version prints the version of etcdlock (its Go module's, "(devel)" when
built from a checkout, with the commit if known), of the etcd client it
was built with (go.etcd.io/etcd/client/v3), and of Go.`,
	setup: func(*flag.FlagSet) func(context.Context, io.Writer, io.Writer) int {
		return func(_ context.Context, stdout, stderr io.Writer) int {
			if _, err := io.WriteString(stdout, versionText()); err != nil {
				return report(stderr, "version", err, exitFailure)
			}
			return exitOK
		}
	},
}

// etcdClientModule is the module whose version "etcdlock version" gives
// as the etcd client's.
const etcdClientModule = "go.etcd.io/etcd/client/v3"

// versionText is what "etcdlock version" prints, from the build
// information the Go toolchain embeds in the binary.
func versionText() string {
	version, client, rev := "unknown", "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == etcdClientModule {
				client = d.Version
				if d.Replace != nil {
					client += " (replaced by " + d.Replace.Path + " " + d.Replace.Version + ")"
				}
			}
		}
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" && modified {
			rev += " (modified)"
		}
	}
	out := fmt.Sprintf("etcdlock version: %s\n", version)
	if rev != "" {
		out += fmt.Sprintf("commit: %s\n", rev)
	}
	return out + fmt.Sprintf("etcd client version: %s\ngo version: %s %s/%s\n", client, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
