package main

import "github.com/etcdlock/etcdlock/internal/cmdline"

// Exit statuses of run, elect, status, observe and dev, on top of exitOK,
// exitFailure and exitUsage (main.go). run and elect exit with CMD's own
// status whenever CMD ran and ended on its own, so their own statuses sit
// where programs rarely exit: next to the 124-127 of timeout(1), env(1) and
// the shells. A CMD can still exit with one of them itself; the one-line
// message on stderr tells the two apart.
//
//	status  meaning
//	0-255   run, elect: CMD's own exit status, when it ran and ended on its
//	        own; 128+N when a signal N killed it (etcdlock forwards the
//	        signals it gets, so Ctrl-C gives 130)
//	1       status, observe, dev: any failure other than those below
//	2       bad usage: flags, arguments, TLS files, no password
//	120     cannot reach etcd within --dial-timeout (nothing ran); the
//	        line on stderr says why
//	121     run: the lock was lost while CMD ran; CMD was stopped
//	124     run: the lock was not acquired within --timeout (CMD did not run)
//	125     run, elect: etcdlock failed otherwise, e.g. etcd refused a
//	        request (CMD is not running: run never started it; elect may
//	        have run it in an earlier term)
//	126     run, elect: CMD was found but could not be executed
//	127     run, elect: CMD was not found
//	128+N   run, elect: interrupted by signal N while CMD was not running
//	        (waiting for the lock, campaigning)
const (
	exitUnreachable = cmdline.ExitUnreachable // cannot reach etcd
	exitLost        = 121                     // the hold was lost while CMD ran; CMD was stopped
	exitTimeout     = 124                     // not acquired within --timeout
	exitRunFailure  = 125                     // run or elect failed while CMD was not running
	exitCannotExec  = 126                     // CMD found but not executable
	exitNotFound    = 127                     // CMD not found
	exitSignalBase  = cmdline.ExitSignalBase  // plus the signal number
)

// exitStatusHelp is the exit-status section of run's and elect's help.
const exitStatusHelp = `
Exit status:

	CMD's own     when CMD ran and ended on its own (128+N if signal N
	              killed it; etcdlock forwards signals, so Ctrl-C gives 130)
	2             bad usage
	120           cannot reach etcd within --dial-timeout
	121           (run) the lock was lost while CMD ran; CMD was stopped
	124           (run) the lock was not acquired within --timeout
	125           etcdlock failed otherwise; CMD is not running
	126, 127      CMD cannot be executed, or was not found
	128+N         interrupted by signal N while CMD was not running
	              (waiting for the lock, campaigning)

A CMD may itself exit with one of these; etcdlock writes one line to stderr
whenever the status is its own, which tells the two apart.`
