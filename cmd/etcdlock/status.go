package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/internal/cmdline"
	"github.com/etcdlock/etcdlock/lock"
)

// statusCmd is "etcdlock status".
var statusCmd = &command{
	name:      "status",
	summary:   "show who holds and who waits for a lock, or leads and campaigns in an election",
	usage:     "etcdlock status [flags] NAME",
	takesArgs: true,
	help: `
Status reads, at one revision, every queue called NAME: the mutex
(etcdlock run, lock.NewMutex), the reader-writer lock (etcdlock run --shared
or --write, lock.NewRWMutex), the semaphore (etcdlock run -n,
lock.NewSemaphore) and the election (etcdlock
elect, package election), or only the one --kind names. Who holds is
decided by the lock package's own rules (lock.Inspect). For each queue that
has keys it lists them in queue order (by token), one line each:

	STATE    holding or waiting; for an election, leader or candidate.
	         A waiter just admitted shows as holding before it knows.
	         invalid: a key the lock's rules reject (one no lock wrote, or
	         a semaphore entry behind one of another limit); it neither
	         holds nor waits.
	MODE     (reader-writer lock) read or write
	PERMITS  (semaphore) the permits the entry holds or waits for
	TOKEN    the key's create revision: the fencing token of its hold
	LEASE    the key's lease ID, in hex
	TTL      what is left of the lease's TTL ("gone" once it expired)
	AGE      time since the holder started, by the holder's own clock,
	         for keys whose value ends in " since <RFC 3339 time>", as
	         run's and elect's do (a Go program's, with WithHolder); "-"
	         for others: etcd keeps no time with a key
	VALUE    the holder's description (host:pid ...), or the candidate's
	         value

With --json it prints one JSON object instead:

	{"name": NAME, "namespace": "etcdlock/", "revision": <etcd revision read>,
	 "queues": [{"kind": "mutex"|"rw"|"sem"|"election", "prefix": "...",
	   "limit": <semaphore limit; sem only>,
	   "entries": [{"state": "holding"|"waiting"|"invalid"|"leader"|"candidate",
	     "mode": "read"|"write" (rw only), "permits": <n> (sem only),
	     "key": "...", "token": <n>, "lease": "<hex>",
	     "ttl_seconds": <n, -1 if the lease is gone>,
	     "age_seconds": <n, to the millisecond, or null>, "value": "..."}]}]}

Queues without keys are left out; nothing at all prints "no holders,
waiters or candidates". The exit status is 0, 2 for bad usage, 120 if etcd
cannot be reached, and 1 for other failures.
` + connSeeAlso,
	setup: setupStatus,
}

// statusKinds are the queue kinds status reads, in the order it shows them.
var statusKinds = []string{"mutex", "rw", "sem", "election"}

// statusTimeout bounds status's reads once connected.
const statusTimeout = 10 * time.Second

// setupStatus defines status's flags.
func setupStatus(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) int {
	var (
		conn   cmdline.Conn
		kind   string
		asJSON bool
	)
	conn.Register(fs)
	fs.StringVar(&kind, "kind", "all", "the `kind` of queue to read: mutex, rw, sem, election or all")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object")
	return func(ctx context.Context, stdout, stderr io.Writer) int {
		name, kinds, code, ok := nameAndKinds("status", fs, kind, stdout, stderr)
		if !ok {
			return code
		}
		if err := conn.Resolve(); err != nil {
			return report(stderr, "status", err, exitUsage)
		}
		cli, err := conn.Connect(ctx, keyPrefix(conn.Namespace, kinds[0], name))
		if err != nil {
			return report(stderr, "status", err, exitFailure)
		}
		defer cmdline.CloseQuietly(cli)
		rctx, cancel := context.WithTimeout(ctx, statusTimeout)
		defer cancel()
		st, err := readStatus(rctx, cli, conn.Namespace, name, kinds, time.Now)
		if err != nil {
			return report(stderr, "status", err, exitFailure)
		}
		if asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(st); err != nil {
				return report(stderr, "status", err, exitFailure)
			}
			return exitOK
		}
		if err := st.print(stdout); err != nil {
			return report(stderr, "status", err, exitFailure)
		}
		return exitOK
	}
}

// keyPrefix is the key prefix of the queue of kind (one of statusKinds)
// called name.
func keyPrefix(ns, kind, name string) string {
	if kind == "election" {
		return election.KeyPrefix(ns, name)
	}
	return lock.KeyPrefix(ns, lock.Kind(kind), name)
}

// lockStatus is status's result, as --json prints it.
type lockStatus struct {
	Name      string        `json:"name"`
	Namespace string        `json:"namespace"`
	Revision  int64         `json:"revision"`
	Queues    []queueStatus `json:"queues"`
}

// queueStatus is one queue called the name.
type queueStatus struct {
	Kind    string        `json:"kind"`
	Prefix  string        `json:"prefix"`
	Limit   int64         `json:"limit,omitempty"`
	Entries []entryStatus `json:"entries"`
}

// entryStatus is one key of a queue.
type entryStatus struct {
	State   string   `json:"state"`
	Mode    string   `json:"mode,omitempty"`
	Permits int64    `json:"permits,omitempty"`
	Key     string   `json:"key"`
	Token   int64    `json:"token"`
	Lease   string   `json:"lease"`
	TTL     int64    `json:"ttl_seconds"`
	Age     *float64 `json:"age_seconds"`
	Value   string   `json:"value"`

	leaseID clientv3.LeaseID
}

// readStatus reads the queues of name of the given kinds at one revision,
// and the TTL of each lease they use. The locks' queues come from
// lock.Inspect, which judges who holds by the lock package's own rules; the
// election's from election.InspectAt, at the same revision, which judges who
// leads by the election's.
func readStatus(ctx context.Context, cli *clientv3.Client, ns, name string, kinds []string, now func() time.Time) (*lockStatus, error) {
	st := &lockStatus{Name: name, Namespace: ns, Queues: []queueStatus{}}
	byKind := make(map[string]queueStatus)
	if slices.ContainsFunc(kinds, func(k string) bool { return k != "election" }) {
		ls, err := lock.Inspect(ctx, cli, ns, name)
		if err != nil {
			return nil, err
		}
		st.Revision = ls.Revision
		for _, l := range ls.Locks {
			byKind[string(l.Kind)] = lockQueue(l)
		}
	}
	if slices.Contains(kinds, "election") {
		es, err := election.InspectAt(ctx, cli, ns, name, st.Revision)
		if err != nil {
			return nil, err
		}
		st.Revision = es.Revision
		byKind["election"] = electionQueue(es)
	}
	t := now()
	for _, kind := range kinds {
		q := byKind[kind]
		if len(q.Entries) == 0 {
			continue
		}
		for i := range q.Entries {
			if since, ok := parseSince(q.Entries[i].Value); ok {
				age := t.Sub(since).Round(time.Millisecond).Seconds()
				q.Entries[i].Age = &age
			}
		}
		st.Queues = append(st.Queues, q)
	}
	ttls := make(map[clientv3.LeaseID]int64)
	for qi := range st.Queues {
		for ei := range st.Queues[qi].Entries {
			e := &st.Queues[qi].Entries[ei]
			ttl, ok := ttls[e.leaseID]
			if !ok {
				ttl = -1
				if e.leaseID != 0 {
					r, err := cli.TimeToLive(ctx, e.leaseID)
					if err != nil {
						return nil, fmt.Errorf("reading the TTL of lease %s: %w", e.Lease, err)
					}
					ttl = r.TTL
				}
				ttls[e.leaseID] = ttl
			}
			e.TTL = ttl
		}
	}
	return st, nil
}

// lockQueue is status's view of a lock's queue as lock.Inspect judged it.
func lockQueue(l lock.LockState) queueStatus {
	qs := queueStatus{Kind: string(l.Kind), Prefix: l.Prefix, Limit: l.Limit}
	for _, e := range l.Keys {
		state := "waiting"
		switch {
		case e.Err != nil:
			state = "invalid" // its acquire fails, or it is no entry at all
		case e.Holding:
			state = "holding"
		}
		qs.Entries = append(qs.Entries, entryStatus{
			State:   state,
			Mode:    string(e.Mode),
			Permits: e.Permits,
			Key:     e.Key,
			Token:   e.Token.Revision,
			Lease:   leaseHex(e.Lease),
			Value:   e.Holder,
			leaseID: e.Lease,
		})
	}
	return qs
}

// electionQueue is status's view of an election's queue as
// election.Inspect judged it.
func electionQueue(es *election.Snapshot) queueStatus {
	q := queueStatus{Kind: "election", Prefix: es.Prefix}
	for _, c := range es.Candidates {
		state := "candidate"
		if c.Leader {
			state = "leader"
		}
		q.Entries = append(q.Entries, entryStatus{
			State:   state,
			Key:     c.Key,
			Token:   c.Token.Revision,
			Lease:   leaseHex(c.Lease),
			Value:   c.Value,
			leaseID: c.Lease,
		})
	}
	return q
}

// kindTitle names a queue kind in status's text output.
var kindTitle = map[string]string{
	"mutex":    "mutex",
	"rw":       "reader-writer lock",
	"sem":      "semaphore",
	"election": "election",
}

// print writes st as text, and returns the first error writing to out.
func (st *lockStatus) print(out io.Writer) error {
	w := &errWriter{w: out}
	if len(st.Queues) == 0 {
		fmt.Fprintf(w, "no holders, waiters or candidates for %q under %q (revision %d)\n", st.Name, st.Namespace, st.Revision)
		return w.err
	}
	for i, q := range st.Queues {
		if i > 0 {
			fmt.Fprintln(w)
		}
		extra := ""
		if q.Kind == "sem" {
			held := int64(0)
			for _, e := range q.Entries {
				if e.State == "holding" {
					held += e.Permits
				}
			}
			extra = fmt.Sprintf(", %d of %d permits held", held, q.Limit)
		}
		fmt.Fprintf(w, "%s %q (%s%s), revision %d:\n", kindTitle[q.Kind], st.Name, q.Prefix, extra, st.Revision)
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		cols := []string{"STATE"}
		switch q.Kind {
		case "rw":
			cols = append(cols, "MODE")
		case "sem":
			cols = append(cols, "PERMITS")
		}
		cols = append(cols, "TOKEN", "LEASE", "TTL", "AGE", "VALUE")
		fmt.Fprintf(tw, "  %s\n", strings.Join(cols, "\t"))
		for _, e := range q.Entries {
			row := []string{e.State}
			switch q.Kind {
			case "rw":
				row = append(row, e.Mode)
			case "sem":
				row = append(row, strconv.FormatInt(e.Permits, 10))
			}
			row = append(row, strconv.FormatInt(e.Token, 10), e.Lease, ttlText(e.TTL), ageText(e.Age), e.Value)
			fmt.Fprintf(tw, "  %s\n", strings.Join(row, "\t"))
		}
		_ = tw.Flush() // its error is w's
	}
	return w.err
}

// errWriter writes to w until a write fails, and then keeps that error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// ttlText shows a remaining TTL in seconds.
func ttlText(ttl int64) string {
	if ttl < 0 {
		return "gone"
	}
	return (time.Duration(ttl) * time.Second).String()
}

// ageText shows an age in seconds, or "-" if unknown.
func ageText(age *float64) string {
	if age == nil {
		return "-"
	}
	d := time.Duration(*age * float64(time.Second))
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
