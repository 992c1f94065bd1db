package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/internal/cmdline"
)

// measuresHandoff says what the handoff rows measure.
const measuresHandoff = "one graceful handoff: the leader resigns while the standby is already campaigning; latency from calling Resign to the standby's Campaign returning"

// candidate is one side of an election handoff: its own client (and
// session), campaigning and resigning one term at a time.
type candidate interface {
	// campaign blocks until this candidate leads.
	campaign(ctx context.Context) error
	// resign ends the current term.
	resign(ctx context.Context) error
	close() error
}

// electionImpl is an election implementation the bench compares.
type electionImpl struct {
	name         string
	prefix       func(ns string) string // where its candidate keys live, to see the standby queued
	newCandidate func(env *benchEnv, ns string) (candidate, error)
}

var (
	etcdlockElection = electionImpl{
		name:         "etcdlock-election",
		prefix:       func(ns string) string { return ns + "election/leader/" },
		newCandidate: newEtcdlockCandidate,
	}
	concurrencyElection = electionImpl{
		name:         "concurrency-election",
		prefix:       func(ns string) string { return ns + "leader/" },
		newCandidate: newConcurrencyCandidate,
	}
)

// handoff returns the cell of graceful handoffs between two candidates of
// impl: A leads, B campaigns; once B's key is queued, A resigns and the time
// until B's Campaign returns is one handoff. Then the roles swap.
func handoff(impl electionImpl, base *baseline) *cell {
	c := &cell{impl: impl.name, scenario: "handoff", contenders: 2, measures: measuresHandoff, base: base}
	c.measure = func(ctx context.Context, env *benchEnv, ns string, d time.Duration) (s sample, err error) {
		ctx, cancel := context.WithTimeout(ctx, d+cellSlack)
		defer cancel()
		var cands [2]candidate
		defer func() {
			for _, c := range cands {
				if c != nil {
					err = errors.Join(err, c.close())
				}
			}
		}()
		for i := range cands {
			if cands[i], err = impl.newCandidate(env, ns); err != nil {
				return s, err
			}
		}
		watcher, err := env.newClient()
		if err != nil {
			return s, err
		}
		defer func() { err = errors.Join(err, cmdline.CloseClient(watcher)()) }()

		leader, standby := cands[0], cands[1]
		if err := leader.campaign(ctx); err != nil {
			return s, fmt.Errorf("campaign: %w", err)
		}
		cpu0, ok0 := processCPU()
		start := time.Now()
		for {
			done := make(chan error, 1)
			go func() { done <- standby.campaign(ctx) }()
			if err := waitQueued(ctx, watcher, impl.prefix(ns), 2); err != nil {
				<-done
				return s, err
			}
			if time.Since(start) >= d {
				// Stop: hand over once more, unmeasured, and resign last.
				err := leader.resign(ctx)
				err = errors.Join(err, <-done, standby.resign(ctx))
				s.elapsed, s.ops = time.Since(start), len(s.lat)
				cpu1, ok1 := processCPU()
				s.cpu, s.cpuOK = cpu1-cpu0, ok0 && ok1
				return s, err
			}
			t0 := time.Now()
			if err := leader.resign(ctx); err != nil {
				<-done
				return s, fmt.Errorf("resign: %w", err)
			}
			if err := <-done; err != nil {
				return s, fmt.Errorf("campaign: %w", err)
			}
			s.lat = append(s.lat, time.Since(t0))
			leader, standby = standby, leader
		}
	}
	return c
}

// waitQueued waits, outside the measured time, until n keys exist under
// prefix: the standby is queued behind the leader.
func waitQueued(ctx context.Context, cli *clientv3.Client, prefix string, n int64) error {
	for {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// etcdlockCandidate campaigns with election.Election.
type etcdlockCandidate struct {
	cli  *clientv3.Client
	el   *election.Election
	term *election.Term
}

func newEtcdlockCandidate(env *benchEnv, ns string) (candidate, error) {
	cli, err := env.newClient()
	if err != nil {
		return nil, err
	}
	el, err := election.New(cli, "leader", election.WithNamespace(ns), election.WithTTL(benchTTL*time.Second))
	if err != nil {
		return nil, errors.Join(err, cmdline.CloseClient(cli)())
	}
	return &etcdlockCandidate{cli: cli, el: el}, nil
}

func (c *etcdlockCandidate) campaign(ctx context.Context) (err error) {
	c.term, err = c.el.Campaign(ctx, "v")
	return err
}

func (c *etcdlockCandidate) resign(ctx context.Context) error { return c.term.Resign(ctx) }

func (c *etcdlockCandidate) close() error {
	return errors.Join(c.el.Close(), cmdline.CloseClient(c.cli)())
}

// concurrencyCandidate campaigns with etcd's concurrency.Election, with a
// session of its own.
type concurrencyCandidate struct {
	cli *clientv3.Client
	s   *concurrency.Session
	el  *concurrency.Election
}

func newConcurrencyCandidate(env *benchEnv, ns string) (candidate, error) {
	cli, s, err := env.newSession()
	if err != nil {
		return nil, err
	}
	return &concurrencyCandidate{cli: cli, s: s, el: concurrency.NewElection(s, ns+"leader")}, nil
}

func (c *concurrencyCandidate) campaign(ctx context.Context) error { return c.el.Campaign(ctx, "v") }

func (c *concurrencyCandidate) resign(ctx context.Context) error { return c.el.Resign(ctx) }

func (c *concurrencyCandidate) close() error {
	return errors.Join(c.s.Close(), cmdline.CloseClient(c.cli)())
}
