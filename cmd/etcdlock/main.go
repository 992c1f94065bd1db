// Command etcdlock runs programs under etcd locks or as an elected leader,
// shows the state of locks and elections, and runs a development server
// and a demonstration of fencing. The bench and the fault suite are
// maintainers' commands of their own (internal/cmd/bench,
// internal/cmd/nemesis), not part of this program.
//
// Usage:
//
//	etcdlock [connection flags] <command> [flags] [arguments]
//
// The commands are:
//
//	run      run a command while holding a lock; stop it if the lock is lost
//	elect    run a command only while this process leads an election
//	status   show who holds and who waits for a lock, or leads and campaigns in an election
//	revoke   ask the holders of a lock, or the leader of an election, to release
//	observe  print a line at every change of an election's leader
//	dev      run a throwaway single-member etcd server to try etcdlock on
//	demo     a paused lock holder is fenced off by the resource it protects
//	version  print etcdlock's version and that of its etcd client
//	help     list the commands, or show one command's help
//
// Run "etcdlock help <command>" for a command's flags. Exit status is 0 on
// success, 2 for bad usage, 120 when etcd cannot be reached, and 1 for any
// other failure (revoke: 3 when nobody holds the name); but run and elect
// exit with their command's own status, and have statuses of their own
// for what can go wrong around it: 121 lock
// lost (the command was stopped), 124 lock not acquired within --timeout,
// 125 other failure, 126 and 127 command not executable or not found, 128+N
// interrupted by signal N (see exitcodes.go, or "etcdlock help run").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// Exit statuses of every command (see package cmdline).
const (
	exitOK      = cmdline.ExitOK      // success
	exitFailure = cmdline.ExitFailure // the command ran and failed
	exitUsage   = cmdline.ExitUsage   // bad command line
)

// command is one subcommand of etcdlock. A new subcommand is a file that
// defines a *command and one line in commands.
type command struct {
	// name is what selects the command: "etcdlock <name>".
	name string
	// summary is the one-line description "etcdlock help" lists.
	summary string
	// usage is the synopsis, e.g. "etcdlock demo [flags]".
	usage string
	// help is the description printed under the synopsis by
	// "etcdlock help <name>" and "etcdlock <name> --help", before the flags.
	help string
	// setup defines the command's flags on fs and returns the function
	// that runs the command once fs has parsed the arguments. run writes
	// its results to stdout and its diagnostics to stderr, stops early when
	// ctx ends, and returns the exit status.
	setup func(fs *flag.FlagSet) cmdline.RunFunc
	// takesArgs says that the command takes arguments after its flags,
	// which its run function finds in fs.Args(); exec rejects them for
	// the other commands.
	takesArgs bool
}

// commands lists the subcommands in the order "etcdlock help" shows them.
var commands = []*command{
	runLockedCmd,
	electCmd,
	statusCmd,
	revokeCmd,
	observeCmd,
	devCmd,
	demoCmd,
	versionCmd,
}

// main runs the command line with SIGINT and SIGTERM cancelling the
// command's context, and exits with its status.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args (without the program name) and returns the
// exit status. It is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printCommands(stderr)
		return exitUsage
	}
	args, err := hoistGlobalFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "etcdlock: %v (see 'etcdlock help')\n", err)
		return exitUsage
	}
	switch name := args[0]; name {
	case "help", "-h", "-help", "--help":
		return runHelp(args[1:], stdout, stderr)
	default:
		cmd := lookup(name)
		if cmd == nil {
			fmt.Fprintf(stderr, "etcdlock: unknown command %q (see 'etcdlock help')\n", name)
			return exitUsage
		}
		return cmd.exec(ctx, args[1:], stdout, stderr)
	}
}

// hoistGlobalFlags moves the flags that come before the command to just
// after it, so that "etcdlock --endpoints X status NAME" is "etcdlock status
// --endpoints X NAME", as etcdctl takes its global flags either side of
// its command. Only the connection flags (cmdline.Conn: --endpoints,
// --cacert, --cert, --key, --user, --dial-timeout, --namespace) may come
// first; a flag after the command wins over the same flag before it.
func hoistGlobalFlags(args []string) ([]string, error) {
	global := make(map[string]bool)
	gfs := flag.NewFlagSet("", flag.ContinueOnError)
	new(cmdline.Conn).Register(gfs)
	gfs.VisitAll(func(f *flag.Flag) { global[f.Name] = true })
	var lead []string
	i := 0
	for ; i < len(args) && len(args[i]) > 1 && args[i][0] == '-'; i++ {
		a := args[i]
		switch a {
		case "-h", "-help", "--help":
			return []string{a}, nil
		case "--":
			return nil, errors.New("missing command")
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !global[name] {
			return nil, fmt.Errorf("unknown flag --%s before the command: only the connection flags may come before it", name)
		}
		lead = append(lead, a)
		if !hasValue {
			if i+1 == len(args) {
				return nil, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			lead = append(lead, args[i])
		}
	}
	switch {
	case len(lead) == 0:
		return args, nil
	case i == len(args):
		return nil, errors.New("missing command after the connection flags")
	case args[i] == "help":
		return args[i:], nil
	}
	return append(append([]string{args[i]}, lead...), args[i+1:]...), nil
}

// lookup returns the command called name, or nil.
func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// runHelp implements "etcdlock help [command]".
func runHelp(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		printCommands(stdout)
		return exitOK
	case 1:
		switch args[0] {
		case "help", "-h", "-help", "--help":
			printCommands(stdout)
			return exitOK
		}
		if t := lookupTopic(args[0]); t != nil {
			printTopic(stdout, t)
			return exitOK
		}
		cmd := lookup(args[0])
		if cmd == nil {
			fmt.Fprintf(stderr, "etcdlock help: unknown command or topic %q (see 'etcdlock help')\n", args[0])
			return exitUsage
		}
		fs, _ := cmd.flagSet()
		cmd.printHelp(stdout, fs)
		return exitOK
	default:
		fmt.Fprintln(stderr, "usage: etcdlock help [command]")
		return exitUsage
	}
}

// printCommands writes the list of commands to w.
func printCommands(w io.Writer) {
	fmt.Fprint(w, "etcdlock runs programs under etcd locks or as an elected leader, shows\n")
	fmt.Fprint(w, "the state of locks and elections, and runs a dev server and a demo.\n\n")
	fmt.Fprint(w, "Usage:\n\n\tetcdlock [connection flags] <command> [flags] [arguments]\n\nThe commands are:\n\n")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "\t%s\t%s\n", c.name, c.summary)
	}
	fmt.Fprintf(tw, "\t%s\t%s\n", "help", "list the commands, or show one command's help")
	_ = tw.Flush()
	fmt.Fprint(w, "\nHelp topics ('etcdlock help <topic>'):\n\n")
	for _, t := range helpTopics {
		fmt.Fprintf(tw, "\t%s\t%s\n", t.name, t.summary)
	}
	_ = tw.Flush()
	fmt.Fprint(w, "\nRun 'etcdlock help <command>' for a command's flags. The connection flags\n")
	fmt.Fprint(w, "(--endpoints, --cacert, --cert, --key, --user, --dial-timeout, --namespace)\n")
	fmt.Fprint(w, "may also come before the command, as etcdctl's do.\n")
	fmt.Fprint(w, "Exit status: 0 success, 2 bad usage, 120 etcd unreachable, 1 any other failure;\n")
	fmt.Fprint(w, "run and elect exit with their command's status (see 'etcdlock help run').\n")
}

// cmdline returns c as a command of package cmdline, which parses its flags,
// prints its help and runs it.
func (c *command) cmdline() *cmdline.Command {
	return &cmdline.Command{Prog: "etcdlock", Name: c.name, Summary: c.summary, Usage: c.usage,
		Help: c.help, Setup: c.setup, TakesArgs: c.takesArgs}
}

// flagSet returns a new flag set with the command's flags.
func (c *command) flagSet() (*flag.FlagSet, cmdline.RunFunc) {
	return c.cmdline().FlagSet()
}

// printHelp writes the command's synopsis, description and flags to w.
func (c *command) printHelp(w io.Writer, fs *flag.FlagSet) { c.cmdline().PrintHelp(w, fs) }

// exec parses args and runs the command. --help prints the help to stdout
// and returns 0; a bad flag or a stray argument returns 2.
func (c *command) exec(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return c.cmdline().Exec(ctx, args, stdout, stderr)
}

// badUsage reports an invalid flag value of the command called name to
// stderr and returns exitUsage.
func badUsage(stderr io.Writer, name, format string, args ...any) int {
	return commandNamed(name).cmdline().BadUsage(stderr, format, args...)
}
