// Package cmdline is what etcdlock's commands share: the user's etcdlock and
// the maintainers' tools (the bench, the fault suite). It holds the
// command framework (flags, help, usage errors), the connection flags
// (named and defaulted as etcdctl's), the exit statuses every command
// uses, and the stop signals.
//
// A command that reaches etcd goes through Conn, which says in one line why
// etcd could not be reached. Nothing here is for use outside the project.
package cmdline

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
)

// Exit statuses every command shares.
const (
	ExitOK          = 0   // success
	ExitFailure     = 1   // the command ran and failed
	ExitUsage       = 2   // bad command line
	ExitUnreachable = 120 // cannot reach etcd within --dial-timeout
	ExitSignalBase  = 128 // plus the number of the signal that interrupted
)

// RunFunc runs a command once its flag set has parsed the arguments. It
// writes its results to stdout and its diagnostics to stderr, stops early
// when ctx ends, and returns the exit status.
type RunFunc = func(ctx context.Context, stdout, stderr io.Writer) int

// Command is one command: a subcommand of a program ("etcdlock run"), or a
// program that is one command (the bench).
type Command struct {
	// Prog is the program's name in messages: "etcdlock".
	Prog string
	// Name selects the subcommand, "etcdlock <name>"; "" for a program
	// that is one command.
	Name string
	// Summary is the one-line description a list of commands shows.
	Summary string
	// Usage is the synopsis, e.g. "etcdlock demo [flags]".
	Usage string
	// Help is the description printed under the synopsis by --help, before
	// the flags.
	Help string
	// Setup defines the command's flags on fs and returns the function
	// that runs the command once fs has parsed the arguments.
	Setup func(fs *flag.FlagSet) RunFunc
	// TakesArgs says that the command takes arguments after its flags,
	// which its run function finds in fs.Args(); Exec rejects them for the
	// other commands.
	TakesArgs bool
}

// Title is the command as messages name it: "etcdlock run", or the
// program's name for a program that is one command.
func (c *Command) Title() string { return strings.TrimSpace(c.Prog + " " + c.Name) }

// HelpHint is what a usage error's line ends with, pointing at the
// command's help: "(see 'etcdlock help run')".
func (c *Command) HelpHint() string {
	if c.Name == "" {
		return fmt.Sprintf("(see '%s --help')", c.Prog)
	}
	return fmt.Sprintf("(see '%s help %s')", c.Prog, c.Name)
}

// FlagSet returns a new flag set with the command's flags, and the
// function that runs the command. The flag set writes nothing: a parse
// error is reported by FlagError.
func (c *Command) FlagSet() (*flag.FlagSet, RunFunc) {
	fs := flag.NewFlagSet(c.Title(), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // Exec prints help itself, to stdout for --help
	return fs, c.Setup(fs)
}

// FlagError reports err, a parse error of the command's flag set, as one
// line ("etcdlock run: unknown flag --bogus (see ...)"), and returns
// ExitUsage.
func (c *Command) FlagError(stderr io.Writer, err error) int {
	return c.BadUsage(stderr, "%s", FlagErrorText(err))
}

// PrintHelp writes the command's synopsis, description and flags to w.
func (c *Command) PrintHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", c.Usage, strings.TrimSpace(c.Help))
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprint(w, "\nFlags:\n")
			first = false
		}
		// Like flag.PrintDefaults, with the "--" spelling used in the help.
		arg, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-" // -n, as Unix commands spell one letter
		}
		fmt.Fprintf(w, "  %s%s", dash, f.Name)
		if arg != "" {
			fmt.Fprintf(w, " %s", arg)
		}
		fmt.Fprintf(w, "\n    \t%s", strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch f.DefValue {
		case "", "false", "0", "0s":
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// Exec parses args and runs the command. --help prints the help to stdout
// and returns 0; a bad flag or a stray argument returns 2.
func (c *Command) Exec(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, runFn := c.FlagSet()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.PrintHelp(stdout, fs)
			return ExitOK
		}
		return c.FlagError(stderr, err)
	}
	if fs.NArg() > 0 && !c.TakesArgs {
		return c.BadUsage(stderr, "unexpected argument %q", fs.Arg(0))
	}
	return runFn(ctx, stdout, stderr)
}

// Main runs c, a program that is one command, on the process's arguments
// with SIGINT and SIGTERM cancelling its context, and exits with its
// status.
func Main(c *Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := c.Exec(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// BadUsage reports an invalid flag value to stderr, in one line that
// points at the help, and returns ExitUsage.
func (c *Command) BadUsage(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s %s\n", c.Title(), fmt.Sprintf(format, args...), c.HelpHint())
	return ExitUsage
}

// Report writes err to stderr as one line, "<title>: <err>", and returns
// its exit status: that of the failure err wraps (Failf), or otherwise
// code. A usage failure's line also points at the help.
func (c *Command) Report(stderr io.Writer, err error, code int) int {
	var f *failure
	if errors.As(err, &f) {
		code = f.code
	}
	if code == ExitUsage {
		return c.BadUsage(stderr, "%s", OneLine(err.Error()))
	}
	fmt.Fprintf(stderr, "%s: %s\n", c.Title(), OneLine(err.Error()))
	return code
}

// OneLine joins the lines of a multi-line message (errors.Join's, say),
// and drops the package prefixes of etcdlock's errors ("lock: ",
// "election: ", "fencing: ", "etcdlock: ") at the start of the message and
// of each part of it, since the line it goes into starts with the
// command's own: "etcdlock run: releasing lock "x": not held: ..." rather
// than "... lock: not held: ...". etcd's own ("etcdserver: ") stay.
func OneLine(s string) string {
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
	for _, p := range innerPrefixes {
		s = strings.TrimPrefix(s, p)
		s = strings.ReplaceAll(s, ": "+p, ": ")
		s = strings.ReplaceAll(s, "; "+p, "; ")
		s = strings.ReplaceAll(s, "("+p, "(")
	}
	return s
}

// innerPrefixes are the prefixes of the messages of etcdlock's packages.
var innerPrefixes = []string{"lock: ", "election: ", "fencing: ", "etcdlock: "}

// failure is an error that calls for a particular exit status.
type failure struct {
	code int
	err  error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// Failf returns an error with a formatted message that Report turns into
// exit status code.
func Failf(code int, format string, args ...any) error {
	return &failure{code: code, err: fmt.Errorf(format, args...)}
}

// UsageError returns a failure with ExitUsage.
func UsageError(format string, args ...any) error { return Failf(ExitUsage, format, args...) }

// Interrupted is the cause of a context that a stop signal ended.
type Interrupted struct{ Sig os.Signal }

func (i *Interrupted) Error() string { return "interrupted by " + SignalName(i.Sig) }

// Status returns the exit status for an interruption by i's signal: 128+N.
func (i *Interrupted) Status() int { return ExitSignalBase + SignalNumber(i.Sig) }

// CausedBySignal reports whether ctx was ended by signal.NotifyContext,
// whose cause is an unexported error that matches context.Canceled and
// says "<signal> signal received".
func CausedBySignal(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return cause != nil && cause != context.Canceled && errors.Is(cause, context.Canceled) &&
		strings.HasSuffix(cause.Error(), " signal received")
}
