package election

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/internal/ctxerr"
	"github.com/etcdlock/etcdlock/internal/keys"
	"github.com/etcdlock/etcdlock/internal/queue"
)

// ValidateName returns nil if name can name an election, and otherwise the
// error matching ErrInvalidName that New and Inspect return for it. It does
// no I/O.
func ValidateName(name string) error { return public.Err(keys.ValidateName(name)) }

// Snapshot is what Inspect read: the candidates of one election, at one
// revision.
type Snapshot struct {
	Name      string // the name passed to Inspect
	Namespace string // the namespace passed to Inspect
	Prefix    string // the etcd key prefix of the candidates' keys (KeyPrefix)
	Revision  int64  // the etcd revision the keys were read at
	// Candidates are every key under Prefix, in the order they campaigned:
	// by create revision, which is their term's token. The leader, if any,
	// is among them.
	Candidates []Candidate
}

// Candidate is one key of an election: its leader or a candidate waiting.
type Candidate struct {
	Key   string
	Value string // the candidate's proclaimed value
	// Leader says whether the election's rule, which the key's own
	// campaign applies, makes the key the leader (or, a candidate just
	// elected, the leader as soon as it learns so).
	Leader bool
	Token  fencing.Token    // the term's token the key has or will have
	Lease  clientv3.LeaseID // the key's lease, 0 for none
}

// Leader returns the leader s shows, or the zero Leader if nobody leads.
func (s *Snapshot) Leader() Leader {
	for _, c := range s.Candidates {
		if c.Leader {
			return Leader{Value: c.Value, Token: c.Token, Lease: c.Lease}
		}
	}
	return Leader{}
}

// Inspect reads, in one linearizable read, the election called name under
// namespace (DefaultNamespace unless its candidates use WithNamespace) and
// says who leads and who waits, by the election's own rule. The Snapshot is
// for display and monitoring, never in place of a term or of fencing. Bad
// arguments return ErrNilClient, ErrInvalidName or ErrInvalidNamespace
// without I/O; otherwise ctx's cause, ErrClientClosed or etcd's error.
func Inspect(ctx context.Context, cli *clientv3.Client, namespace, name string) (*Snapshot, error) {
	return InspectAt(ctx, cli, namespace, name, 0)
}

// InspectAt is Inspect reading at revision rev, or at the current one if
// rev is 0: a caller that read other keys at rev gets a snapshot consistent
// with them. etcd refuses a compacted revision (rpctypes.ErrCompacted).
func InspectAt(ctx context.Context, cli *clientv3.Client, namespace, name string, rev int64) (*Snapshot, error) {
	if cli == nil {
		return nil, ErrNilClient
	}
	if err := errors.Join(keys.ValidateName(name), keys.ValidateNamespace(namespace)); err != nil {
		return nil, public.Err(err)
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err // ended already: no read
	}
	s := &Snapshot{Name: name, Namespace: namespace, Prefix: KeyPrefix(namespace, name)}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := cli.Get(ctx, s.Prefix, opts...)
	if err != nil {
		if cause := ctxerr.Ended(ctx); cause != nil {
			return nil, cause
		}
		if cli.Ctx().Err() != nil {
			return nil, ErrClientClosed // not the context.Canceled clientv3 reports
		}
		return nil, fmt.Errorf("election: reading the candidates of %q: %w", name, err)
	}
	s.Revision = resp.Header.Revision
	if rev != 0 {
		s.Revision = rev
	}
	for _, kv := range resp.Kvs {
		self := queue.Entry{Key: string(kv.Key), Rev: kv.CreateRevision, Weight: 1}
		v := queue.JudgeSnapshot(queue.Exclusive{}, s.Prefix, s.Prefix, self, resp.Kvs)
		s.Candidates = append(s.Candidates, Candidate{
			Key:    string(kv.Key),
			Value:  string(kv.Value),
			Leader: v.Admitted && v.Err == nil,
			Token:  fencing.Token{Key: string(kv.Key), Revision: kv.CreateRevision},
			Lease:  clientv3.LeaseID(kv.Lease),
		})
	}
	return s, nil
}
