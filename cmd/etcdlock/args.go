package main

import (
	"errors"
	"flag"
	"io"
	"time"

	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// report writes err to stderr as one line, "etcdlock <name>: <err>", and
// returns its exit status: that of the failure err wraps (cmdline.Failf), or
// otherwise code. A usage failure is followed by the line pointing at the
// command's help.
func report(stderr io.Writer, name string, err error, code int) int {
	return commandNamed(name).cmdline().Report(stderr, err, code)
}

// flagParseError is a parse error of the flag set, which argsFailed
// reports in the command's words (cmdline.FlagErrorText).
type flagParseError struct{ err error }

func (e *flagParseError) Error() string { return e.err.Error() }
func (e *flagParseError) Unwrap() error { return e.err }

// errFlagParse is matched by every flagParseError.
var errFlagParse = errors.New("bad flag")

// Is reports whether target is errFlagParse.
func (e *flagParseError) Is(target error) bool { return target == errFlagParse }

// positional returns the n names that come first among the arguments left
// after fs parsed the command line, and what follows them. Flags may also
// follow the names ("etcdlock run NAME --ttl 5s -- CMD"): fs parses them
// too, up to the first argument that is not a flag, or up to and without
// "--". So everything after "--" (or after the first non-flag that follows
// the names) is left alone, CMD's flags included.
//
// It returns flag.ErrHelp for -h or --help among those flags, an error
// matching errFlagParse for a bad flag, and a usage failure when a name is
// missing.
func positional(fs *flag.FlagSet, n int, what ...string) (names, rest []string, err error) {
	args := fs.Args()
	for i := 0; i < n; i++ {
		if len(args) == 0 {
			return nil, nil, cmdline.UsageError("missing %s", what[i])
		}
		names = append(names, args[0])
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, err
			}
			return nil, nil, &flagParseError{err}
		}
		args = fs.Args()
	}
	return names, args, nil
}

// commandNamed is lookup, set by init: a command's own functions cannot
// refer to the commands table, which refers to them, without making an
// initialization cycle.
var commandNamed func(name string) *command

func init() { commandNamed = lookup }

// parseArgs is positional for the command called name, which takes n names
// and nothing else. On failure it writes the help or the error and returns
// ok false with the exit status.
func parseArgs(name string, fs *flag.FlagSet, n int, stdout, stderr io.Writer, what ...string) (names []string, code int, ok bool) {
	names, rest, err := positional(fs, n, what...)
	if err == nil && len(rest) > 0 {
		err = cmdline.UsageError("unexpected argument %q", rest[0])
	}
	if err != nil {
		return nil, argsFailed(name, fs, err, stdout, stderr), false
	}
	return names, exitOK, true
}

// argsFailed reports an error of positional for the command called name
// and returns the exit status.
func argsFailed(name string, fs *flag.FlagSet, err error, stdout, stderr io.Writer) int {
	switch {
	case errors.Is(err, flag.ErrHelp):
		commandNamed(name).printHelp(stdout, fs)
		return exitOK
	case errors.Is(err, errFlagParse):
		return commandNamed(name).cmdline().FlagError(stderr, errors.Unwrap(err))
	default:
		return report(stderr, name, err, exitUsage)
	}
}

// optDuration is a duration flag that knows whether it was given. Its
// default shows as nothing in the help, which says what it is.
type optDuration struct {
	d   time.Duration
	set bool
}

func (o *optDuration) String() string {
	if o == nil || !o.set {
		return ""
	}
	return o.d.String()
}

func (o *optDuration) Set(s string) error {
	d, err := cmdline.ParseDuration(s)
	if err != nil {
		return err
	}
	o.d, o.set = d, true
	return nil
}
