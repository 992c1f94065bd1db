package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// ErrClosed is returned by Source.Get after Close.
var ErrClosed = errors.New("closed")

// ErrRevoke is wrapped by the error of a revoke at Close that failed.
var ErrRevoke = errors.New("revoking lease")

// RevokeTimeout bounds the revoke of an owned lease at Close.
const RevokeTimeout = 5 * time.Second

// Source hands out a live lease: either the lease of a session the caller
// passed in, or one the Source grants itself and replaces when it expires.
// A Source is safe for concurrent use.
type Source struct {
	cli     *clientv3.Client
	session *concurrency.Session
	ttl     time.Duration
	margin  time.Duration
	lg      *zap.Logger

	mu      sync.Mutex
	keeper  *Keeper
	release func() // for a session's keeper: drop this Source's reference
	closed  bool
	// granting is closed when the grant in flight ends; nil when none is.
	granting chan struct{}
}

// Keepers of callers' sessions are shared by every Source on the same client,
// lease and safety margin, so all holds on one lease share one renewal probe
// (one per margin: a keeper's deadlines are its margin's). The logger is the
// first Source's.
var shared = struct {
	sync.Mutex
	m map[sharedKey]*sharedKeeper
}{m: make(map[sharedKey]*sharedKeeper)}

// sharedKey says which keepers are shared: one per client, lease, margin
// and session. Two sessions on one lease (concurrency.WithLease) get a
// keeper each, since each ends on its own session's Done: one orphaned or
// cancelled must not end the other's holds while the lease lives on.
type sharedKey struct {
	cli    *clientv3.Client
	id     clientv3.LeaseID
	margin time.Duration
	done   <-chan struct{}
}

type sharedKeeper struct {
	k    *Keeper
	refs int
}

func acquireShared(cli *clientv3.Client, id clientv3.LeaseID, cfg Config) (*Keeper, func()) {
	shared.Lock()
	defer shared.Unlock()
	key := sharedKey{cli, id, cfg.Margin, cfg.SessionDone}
	e := shared.m[key]
	if e == nil {
		e = &sharedKeeper{k: Start(cli, id, cfg)}
		shared.m[key] = e
	}
	e.refs++
	var once sync.Once
	return e.k, func() {
		once.Do(func() {
			shared.Lock()
			e.refs--
			last := e.refs == 0
			if last {
				delete(shared.m, key)
			}
			shared.Unlock()
			if last {
				e.k.Stop()
			}
		})
	}
}

// NewSource returns a Source. With a session, its lease is used and the
// session stays the caller's to close; without, leases of ttl (whole seconds)
// are granted on demand and revoked at Close.
func NewSource(cli *clientv3.Client, session *concurrency.Session, ttl, margin time.Duration, lg *zap.Logger) *Source {
	return &Source{cli: cli, session: session, ttl: ttl, margin: margin, lg: lg}
}

// Get returns the keeper of a live lease, granting one if needed. It blocks
// for one Grant round trip when it grants; callers that arrive meanwhile
// wait for that grant, each only as long as its own ctx allows.
func (s *Source) Get(ctx context.Context) (*Keeper, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		if s.keeper != nil && s.keeper.Gone() == nil {
			k := s.keeper
			s.mu.Unlock()
			return k, nil
		}
		if s.session != nil {
			defer s.mu.Unlock()
			if s.keeper != nil {
				return nil, ErrExpired // a caller's session does not come back
			}
			select {
			case <-s.session.Done():
				return nil, ErrExpired
			default:
			}
			s.keeper, s.release = acquireShared(s.cli, s.session.Lease(), Config{Margin: s.margin, SessionDone: s.session.Done(), Logger: s.lg})
			return s.keeper, nil
		}
		if s.granting != nil { // another caller is granting: wait for it
			ch := s.granting
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
		old := s.keeper
		s.keeper = nil
		s.granting = make(chan struct{})
		s.mu.Unlock()
		if old != nil {
			old.Stop()
		}
		k, err := s.grant(ctx)
		s.mu.Lock()
		close(s.granting)
		s.granting = nil
		closed := s.closed
		if err == nil && !closed {
			s.keeper = k
		}
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if closed { // Close ran during the grant: undo it
			k.Stop()
			rctx, cancel := context.WithTimeout(context.Background(), RevokeTimeout)
			defer cancel()
			_, _ = s.cli.Revoke(rctx, k.ID())
			return nil, ErrClosed
		}
		return k, nil
	}
}

func (s *Source) grant(ctx context.Context) (*Keeper, error) {
	sent := time.Now()
	resp, err := s.cli.Grant(ctx, int64(s.ttl/time.Second))
	if err != nil {
		return nil, err
	}
	s.lg.Debug("lease granted", zap.String("lease", leaseHex(resp.ID)), zap.Int64("ttl", resp.TTL))
	return Start(s.cli, resp.ID, Config{
		TTL:    time.Duration(resp.TTL) * time.Second,
		Sent:   sent,
		Margin: s.margin,
		Logger: s.lg,
	}), nil
}

// Close stops renewing. A lease the Source granted is revoked, on a bounded
// context, which deletes every key on it. Get fails with ErrClosed from the
// start of Close, without waiting for the revoke. Close is idempotent; a
// Close while another runs returns nil at once.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	k, release := s.keeper, s.release
	s.mu.Unlock()
	if k == nil {
		return nil
	}
	if release != nil {
		release()
		return nil
	}
	k.Stop()
	if k.Gone() != nil {
		return nil
	}
	if s.cli.Ctx().Err() != nil {
		// The client was closed first, and would retry the revoke until
		// the timeout: the lease ends with its TTL.
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), RevokeTimeout)
	defer cancel()
	_, err := s.cli.Revoke(ctx, k.ID())
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return nil // expired already
	}
	if s.cli.Ctx().Err() != nil {
		return nil // the client was closed meanwhile
	}
	if err != nil {
		return fmt.Errorf("%w %s at Close (its keys go when it expires, within %v): %w", ErrRevoke, leaseHex(k.ID()), s.ttl, err)
	}
	return nil
}
