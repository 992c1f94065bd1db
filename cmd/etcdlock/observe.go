package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// observeCmd is "etcdlock observe".
var observeCmd = &command{
	name:      "observe",
	summary:   "print a line at every change of an election's leader",
	usage:     "etcdlock observe [flags] NAME",
	takesArgs: true,
	help: `
Observe follows the election NAME (etcdlock elect, package election) and
prints one line for the leader at the start and one at every change: a new
leader, a new value proclaimed by the leader, or nobody leading.

	2026-01-02T15:04:05.123Z leader "host:4242 since ..." token 1234 lease 694d7a1b2c3d4e5f
	2026-01-02T15:04:09.456Z no leader

The time is when observe saw the change. With --json each line is a JSON
object instead:

	{"time": "...", "leader": true, "value": "...", "key": "...", "token": 1234, "lease": "694d7a1b2c3d4e5f"}
	{"time": "...", "leader": false}

It never reports a candidate that does not lead, and terms only grow. If
etcd is unreachable for a while it reports the leader it finds when it is
back, and may have missed terms in between. Observe runs until interrupted
(SIGINT, SIGTERM) and then exits 0; 2 for bad usage, 120 if etcd cannot be
reached at the start, 1 for other failures.
` + cmdline.ConnHelp,
	setup: setupObserve,
}

// observeEvent is one line of observe --json.
type observeEvent struct {
	Time   string `json:"time"`
	Leader bool   `json:"leader"`
	Value  string `json:"value"`
	Key    string `json:"key"`
	Token  int64  `json:"token"`
	Lease  string `json:"lease"`
}

// MarshalJSON writes every field of a leader, its value even when empty (a
// leader may proclaim ""), and only the time and "leader": false for no
// leader.
func (ev observeEvent) MarshalJSON() ([]byte, error) {
	if !ev.Leader {
		return json.Marshal(struct {
			Time   string `json:"time"`
			Leader bool   `json:"leader"`
		}{ev.Time, false})
	}
	type leader observeEvent // its fields, without this method
	return json.Marshal(leader(ev))
}

// setupObserve defines observe's flags.
func setupObserve(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) int {
	var (
		conn   cmdline.Conn
		asJSON bool
	)
	conn.Register(fs)
	fs.BoolVar(&asJSON, "json", false, "print one JSON object per line")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		names, code, ok := parseArgs("observe", fs, 1, stdout, stderr, "NAME")
		if !ok {
			return code
		}
		name := names[0]
		if err := election.ValidateName(name); err != nil {
			return badUsage(stderr, "observe", "NAME: %v", err)
		}
		if err := conn.Resolve(); err != nil {
			return report(stderr, "observe", err, exitUsage)
		}
		cli, err := conn.Connect(ctx, election.KeyPrefix(conn.Namespace, name))
		if err == nil {
			defer cmdline.CloseQuietly(cli)
		}
		if ctx.Err() != nil {
			return exitOK
		}
		if err != nil {
			return report(stderr, "observe", err, exitFailure)
		}
		e, err := election.New(cli, name, election.WithNamespace(conn.Namespace))
		if err != nil {
			return report(stderr, "observe", err, exitFailure)
		}
		enc := json.NewEncoder(stdout)
		var werr error
		for l := range e.Observe(ctx) {
			if werr != nil {
				continue // drain until Observe stops
			}
			ev := observeEvent{Time: time.Now().UTC().Format(sinceLayout), Leader: !l.IsZero()}
			if ev.Leader {
				ev.Value, ev.Key, ev.Token, ev.Lease = l.Value, l.Token.Key, l.Token.Revision, leaseHex(l.Lease)
			}
			switch {
			case asJSON:
				werr = enc.Encode(ev)
			case ev.Leader:
				_, werr = fmt.Fprintf(stdout, "%s leader %q token %d lease %s\n", ev.Time, ev.Value, ev.Token, ev.Lease)
			default:
				_, werr = fmt.Fprintf(stdout, "%s no leader\n", ev.Time)
			}
			if werr != nil {
				_ = e.Close() // stops Observe, which closes the channel
			}
		}
		if err := e.Close(); err != nil {
			return report(stderr, "observe", err, exitFailure)
		}
		if werr != nil {
			return report(stderr, "observe", werr, exitFailure)
		}
		return exitOK
	}
}
