package election

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/ctxerr"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// Election is one named election. It is safe for concurrent use; close it
// when done.
type Election struct {
	p    *queue.Primitive
	name string
	lg   *zap.Logger

	mu      sync.Mutex
	terms   map[*Term]struct{}   // terms campaigned through this Election and not yet ended
	running *runState            // Run's current leader work, if any
	runs    map[*runCtl]struct{} // Runs in progress, which Close ends first
	closed  bool                 // Close was called: Observe and Run start nothing
	wg      sync.WaitGroup       // Observe goroutines; Add only under mu while !closed
}

// New returns the election called name on cli. It does no I/O.
func New(cli *clientv3.Client, name string, options ...Option) (*Election, error) {
	p, err := queue.NewPrimitive(cli, kind, name, queue.Exclusive{}, queue.KeyWatches, opts(options), public)
	if err != nil {
		return nil, err
	}
	return &Election{p: p, name: name, lg: p.Q.Logger, terms: make(map[*Term]struct{}), runs: make(map[*runCtl]struct{})}, nil
}

// KeyPrefix returns the etcd key prefix under which the candidates of the
// election called name queue, under namespace: what Prefix returns. name
// must be valid (see ErrInvalidName); it is escaped so that no election's
// prefix holds another's.
func KeyPrefix(namespace, name string) string { return keys.Prefix(namespace, kind, name) }

// kind is the election's kind in its keys: "<namespace>election/<name>/".
const kind = "election"

// Name returns the election's name.
func (e *Election) Name() string { return e.name }

// Prefix returns the etcd key prefix under which candidates queue.
func (e *Election) Prefix() string { return e.p.Q.Prefix }

// Leader describes who leads. The zero Leader means nobody does.
type Leader struct {
	// Value is the leader's proclaimed value.
	Value string
	// Token is the leader key and its create revision: the term number.
	Token fencing.Token
	// Lease is the leader's lease.
	Lease clientv3.LeaseID
}

// IsZero reports whether l means "no leader".
func (l Leader) IsZero() bool { return l.Token.IsZero() }

// String describes the leader for logs: its value and term, or "no leader".
func (l Leader) String() string {
	if l.IsZero() {
		return "no leader"
	}
	return fmt.Sprintf("%q (term %s)", l.Value, l.Token)
}

func leaderOf(kv *mvccpb.KeyValue) Leader {
	return Leader{
		Value: string(kv.Value),
		Token: fencing.Token{Key: string(kv.Key), Revision: kv.CreateRevision},
		Lease: clientv3.LeaseID(kv.Lease),
	}
}

// Campaign blocks until this candidate leads, in the order candidates
// campaigned, and returns the term; its errors are a campaign's (see the
// package doc). value is published as the leader's value; an empty value
// publishes the holder description, "hostname:pid".
func (e *Election) Campaign(ctx context.Context, value string) (*Term, error) {
	if err := checkValue(value); err != nil {
		return nil, err
	}
	h, err := e.p.Acquire(ctx, &e.p.Q, queue.Request{Value: value})
	if err != nil {
		return nil, err
	}
	if value == "" {
		value = e.p.Value
	}
	t := &Term{h: h, e: e, value: value}
	e.mu.Lock()
	for old := range e.terms { // forget ended terms, which nothing else may
		if old.Err() != nil {
			delete(e.terms, old)
		}
	}
	e.terms[t] = struct{}{}
	e.mu.Unlock()
	e.lg.Info("elected", zap.Stringer("term", h.Token()))
	return t, nil
}

// Leader returns the current leader, in one linearizable read. It returns
// ErrNoLeader when nobody leads, ErrClosed after Close, ErrClientClosed once
// the etcd client is closed, ctx's cause, or etcd's error.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	cli := e.p.Q.Client
	switch {
	case closed:
		return Leader{}, ErrClosed
	case cli.Ctx().Err() != nil:
		return Leader{}, ErrClientClosed
	case ctx.Err() != nil:
		return Leader{}, context.Cause(ctx)
	}
	resp, err := cli.Get(ctx, e.p.Q.Prefix, clientv3.WithFirstCreate()...)
	if err != nil {
		if cause := ctxerr.Ended(ctx); cause != nil {
			return Leader{}, cause
		}
		if cli.Ctx().Err() != nil {
			return Leader{}, ErrClientClosed
		}
		return Leader{}, err
	}
	if len(resp.Kvs) == 0 {
		return Leader{}, ErrNoLeader
	}
	return leaderOf(resp.Kvs[0]), nil
}

// IsLeader reports whether a term campaigned through this Election is
// current: not resigned, not lost, and its lease deadline not passed.
func (e *Election) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	leads := false
	for t := range e.terms {
		if t.Err() != nil {
			delete(e.terms, t) // ended: forget it
			continue
		}
		leads = leads || time.Now().Before(t.Deadline())
	}
	return leads
}

// Close ends Runs in progress (they return ErrClosed) and waits for their
// Lead to return, so it must not be called from a callback of Run; then it
// ends campaigns (ErrClosed), resigns every current term, stops observers,
// and revokes the lease it granted, each request bounded by 5 s; with the
// etcd client closed it sends nothing and reports the terms it could not
// resign with ErrClientClosed. Close is idempotent: a second Close waits
// for the first and returns nil.
func (e *Election) Close() error {
	e.mu.Lock()
	e.closed = true // no Observe adds to wg, and no Run starts, from here on
	runs := make([]*runCtl, 0, len(e.runs))
	for r := range e.runs {
		runs = append(runs, r)
	}
	e.mu.Unlock()
	for _, r := range runs {
		r.cancel(ErrClosed)
	}
	for _, r := range runs {
		<-r.done
	}
	err := e.p.Close()
	e.wg.Wait()
	return err
}

// Term is one leadership: from Campaign until it is resigned or lost. A
// Term is safe for concurrent use.
type Term struct {
	h *queue.Hold
	e *Election

	mu       sync.Mutex
	value    string
	valueRev int64 // revision of the Proclaim that set value (0: Campaign's)
}

// Token returns the term's fencing token: the leader key and its create
// revision, larger than every earlier term's of the same election.
func (t *Term) Token() fencing.Token { return t.h.Token() }

// Value returns the value last published by this term.
func (t *Term) Value() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.value
}

// Done returns a channel closed when the term is lost or resigned.
func (t *Term) Done() <-chan struct{} { return t.h.Done() }

// Context returns a context cancelled when the term is lost or resigned;
// context.Cause gives a *LostError (matching ErrLost) or ErrResigned.
func (t *Term) Context() context.Context { return t.h.Context() }

// Err returns nil while the term is current, a *LostError once lost, or
// ErrResigned once resigned.
func (t *Term) Err() error { return t.h.Err() }

// Deadline returns when the term will be presumed lost unless its lease is
// renewed first (renewals move it every TTL/3). After a loss it no longer
// describes this term.
func (t *Term) Deadline() time.Time { return t.h.Deadline() }

// Lease returns the ID of the term's lease.
func (t *Term) Lease() clientv3.LeaseID { return t.h.Lease() }

// Proclaim publishes value (an empty one as it is) in one Txn that succeeds
// only while the term's key is current. It returns ErrNotLeader (wrapping
// the loss, if known) once the term has ended, ErrInvalidValue,
// ErrClientClosed, ctx's cause, or etcd's error.
func (t *Term) Proclaim(ctx context.Context, value string) error {
	if err := checkValue(value); err != nil {
		return err
	}
	if err := t.Err(); err != nil {
		return notLeader(err)
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if t.e.p.Q.Client.Ctx().Err() != nil {
		return ErrClientClosed // sent, it would be retried until ctx ends
	}
	tok := t.Token()
	resp, err := t.e.p.Q.Client.Txn(ctx).If(tok.Cmp()).
		Then(clientv3.OpPut(tok.Key, value, clientv3.WithLease(t.h.Lease()))).Commit()
	if err == nil && resp.Header == nil {
		err = queue.ErrMalformed
	}
	if err != nil {
		if cause := ctxerr.Ended(ctx); cause != nil {
			return cause
		}
		if t.e.p.Q.Client.Ctx().Err() != nil {
			return ErrClientClosed
		}
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: term %s is over", ErrNotLeader, tok)
	}
	// Concurrent Proclaims may answer in any order: keep the value etcd
	// kept, the one written last.
	t.mu.Lock()
	if resp.Header.Revision > t.valueRev {
		t.value, t.valueRev = value, resp.Header.Revision
	}
	t.mu.Unlock()
	return nil
}

// Resign ends the term in one Txn that deletes the leader key only while it
// is this term's, so the next candidate leads at once; Done closes at the
// first call, even if it fails. It returns nil (also on a retry), ErrNotLeader
// (wrapping the loss) if the term was lost or resigned, or ctx's or etcd's
// error, after which the key is deleted in the background once etcd answers.
func (t *Term) Resign(ctx context.Context) error {
	err := t.h.Release(ctx)
	if err == nil || errorsIsNotHeld(err) {
		t.e.mu.Lock()
		delete(t.e.terms, t)
		t.e.mu.Unlock()
	}
	if errorsIsNotHeld(err) {
		return notLeader(err)
	}
	if err == nil {
		t.e.lg.Info("resigned", zap.Stringer("term", t.Token()))
	}
	return err
}

// checkValue returns ErrInvalidValue for a value longer than MaxValueLen.
func checkValue(value string) error {
	if len(value) > MaxValueLen {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidValue, len(value), MaxValueLen)
	}
	return nil
}

func errorsIsNotHeld(err error) bool { return errors.Is(err, errNotHeld) }

// notLeader wraps err, a term's loss or a release's ErrNotHeld, in
// ErrNotLeader, with the package's prefix once.
func notLeader(err error) error {
	msg := ErrNotLeader.Error() + ": " + strings.TrimPrefix(err.Error(), "election: ")
	return &notLeaderError{msg: msg, err: err}
}

type notLeaderError struct {
	msg string
	err error
}

func (e *notLeaderError) Error() string   { return e.msg }
func (e *notLeaderError) Unwrap() []error { return []error{ErrNotLeader, e.err} }
