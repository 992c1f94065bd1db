package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
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

It never reports a candidate that does not lead, and terms only grow.
Observe asks etcd who leads every 2s. If etcd does not answer within 2s,
it says so on stderr and prints the leader it showed last again, marked
unconfirmed: that leader may have lost its term meanwhile.

	2026-01-02T15:04:12.789Z leader "host:4242 since ..." token 1234 lease 694d7a1b2c3d4e5f (unconfirmed)
	{"time": "...", "leader": true, ..., "unconfirmed": true}

When etcd answers again, observe says so on stderr, prints the leader
again if it has not changed, and otherwise the new one (it may have missed
terms in between). Observe runs until interrupted (SIGINT, SIGTERM) and
then exits 0; 2 for bad usage, 120 if etcd cannot be reached at the start,
1 for other failures.
` + connSeeAlso,
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
	// Unconfirmed says that etcd did not answer: the leader shown last
	// is shown again, and may no longer lead.
	Unconfirmed bool `json:"unconfirmed,omitempty"`
}

// MarshalJSON writes every field of a leader, its value even when empty (a
// leader may proclaim ""), and only the time and "leader": false for no
// leader.
func (ev observeEvent) MarshalJSON() ([]byte, error) {
	if !ev.Leader {
		return json.Marshal(struct {
			Time        string `json:"time"`
			Leader      bool   `json:"leader"`
			Unconfirmed bool   `json:"unconfirmed,omitempty"`
		}{ev.Time, false, ev.Unconfirmed})
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
		werr := observeLoop(ctx, e, stdout, stderr, asJSON)
		if err := e.Close(); err != nil {
			return report(stderr, "observe", err, exitFailure)
		}
		if werr != nil {
			return report(stderr, "observe", werr, exitFailure)
		}
		return exitOK
	}
}

// Observe's check that etcd still answers.
const (
	observeProbeEvery   = 2 * time.Second
	observeProbeTimeout = 2 * time.Second
)

// observeLoop prints the leaders e.Observe reports until ctx ends or a
// write fails, whose error it returns. Every observeProbeEvery it reads
// the leader (one linearizable Range: e.Observe's watch alone stays silent
// while etcd is gone, and would leave a leader that lost its term on
// screen, unmarked). When a read fails it says so on stderr, once, and
// prints the leader shown last again, marked unconfirmed. When a read or
// e.Observe succeeds again it says so; a read prints the leader again if
// unchanged (a change comes from e.Observe, whose last leader is the one
// shown last). It waits for its reads before returning.
func observeLoop(ctx context.Context, e *election.Election, stdout, stderr io.Writer, asJSON bool) error {
	enc := json.NewEncoder(stdout)
	show := func(l election.Leader, unconfirmed bool) error {
		ev := observeEvent{Time: time.Now().UTC().Format(sinceLayout), Leader: !l.IsZero(), Unconfirmed: unconfirmed}
		if ev.Leader {
			ev.Value, ev.Key, ev.Token, ev.Lease = l.Value, l.Token.Key, l.Token.Revision, leaseHex(l.Lease)
		}
		mark := ""
		if unconfirmed {
			mark = " (unconfirmed)"
		}
		var err error
		switch {
		case asJSON:
			err = enc.Encode(ev)
		case ev.Leader:
			_, err = fmt.Fprintf(stdout, "%s leader %q token %d lease %s%s\n", ev.Time, ev.Value, ev.Token, ev.Lease, mark)
		default:
			_, err = fmt.Fprintf(stdout, "%s no leader%s\n", ev.Time, mark)
		}
		return err
	}
	type probe struct {
		l   election.Leader
		err error
	}
	probes := make(chan probe, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(observeProbeEvery)
	defer tick.Stop()
	var (
		shown       election.Leader
		haveShown   bool
		unconfirmed bool // the probe failed, and has not succeeded since
		probing     bool
		werr        error
	)
	obs := e.Observe(ctx)
	for obs != nil {
		select {
		case l, ok := <-obs:
			switch {
			case !ok:
				obs = nil
			case werr != nil: // drain until Observe stops
			default:
				if unconfirmed { // Observe read it from etcd
					unconfirmed = false
					fmt.Fprintln(stderr, "etcdlock observe: etcd answers again")
				}
				werr = show(l, false)
				shown, haveShown = l, true
			}
		case <-tick.C:
			if probing || werr != nil {
				continue
			}
			probing = true
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, observeProbeTimeout)
				defer cancel()
				l, err := e.Leader(pctx)
				if errors.Is(err, election.ErrNoLeader) {
					err = nil
				}
				probes <- probe{l, err}
			})
		case p := <-probes:
			probing = false
			switch {
			case ctx.Err() != nil || werr != nil || !haveShown:
			case p.err != nil && !unconfirmed:
				unconfirmed = true
				why := cmdline.OneLine(p.err.Error())
				if errors.Is(p.err, context.DeadlineExceeded) {
					why = fmt.Sprintf("etcd did not answer within %v", observeProbeTimeout)
				}
				fmt.Fprintf(stderr, "etcdlock observe: cannot confirm the leader: %s; the one shown last may no longer lead\n", why)
				werr = show(shown, true)
			case p.err == nil && unconfirmed:
				unconfirmed = false
				fmt.Fprintln(stderr, "etcdlock observe: etcd answers again")
				if p.l == shown {
					werr = show(shown, false)
				} // else Observe, whose last is shown, reports the change
			}
		}
		if werr != nil && obs != nil {
			_ = e.Close() // stops Observe, which closes the channel
		}
	}
	return werr
}
