package embedded

import (
	"reflect"
	"time"
	"unsafe"

	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

// Partitions are made on the raft transport's peers, not through
// EtcdServer.CutPeer and MendPeer. Those also pause and resume the
// transport's "remote" to the same member (the sender etcd uses for a
// member it hears from but does not yet count as a peer, which it adds
// while it replays membership or applies a snapshot), and a remote's
// Pause and Resume are not idempotent in etcd v3.7: Resume on a running
// remote starts a second set of pipeline workers and orphans the first,
// so that the next Pause waits for them forever; Pause on a paused one
// closes a closed channel. A remote's state cannot be read from outside,
// and remotes appear at any time, so no bookkeeping of ours can call
// CutPeer and MendPeer safely. A peer's Pause and Resume only set a flag
// and pause its stream readers: they are idempotent. A remote carries
// traffic only while its member is not a peer, a window the peers'
// cuts do not cover; the enforcer (below) closes the other gap, peers
// that etcd replaces when it applies a snapshot.

// transportOf returns the raft transport of srv, or nil if it cannot be
// reached: etcd does not export it, so it is read from the server's
// unexported fields (r.transport, in etcd v3.5 to v3.7). The cluster
// checks at start that this works, so that a change in etcd's layout
// fails there, not as a partition that silently cuts nothing.
func transportOf(srv *etcdserver.EtcdServer) (tr *rafthttp.Transport) {
	if srv == nil {
		return nil
	}
	defer func() {
		if recover() != nil {
			tr = nil
		}
	}()
	f := reflect.ValueOf(srv).Elem().FieldByName("r").FieldByName("transport")
	if !f.IsValid() {
		return nil
	}
	v := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface()
	tr, _ = v.(*rafthttp.Transport)
	return tr
}

// link is the raft traffic of member from with member to, as from's
// transport handles it: cutting it makes from drop what it would send to
// to and what it reads from to's streams.
type link struct{ from, to int }

// applyLink cuts or mends l as the partitions in effect want, on the
// from member's current transport. It pauses a peer only if that peer is
// not the one it paused already, and resumes only the peer it paused:
// each call changes a state or does nothing. A link whose member is
// stopped, or whose peer does not exist yet, is left for the restart or
// the enforcer. c.mu is held.
func (c *Cluster) applyLink(l link) {
	want := c.cutWanted(l.from, l.to)
	had := c.cut[l]
	var p rafthttp.Pausable
	if tr := transportOf(c.members[l.from].EtcdServer()); tr != nil {
		p, _ = tr.Get(c.members[l.to].id).(rafthttp.Pausable)
	}
	switch {
	case want && p != nil && p != had:
		p.Pause()
		c.cut[l] = p
	case !want && had != nil:
		if p == had {
			p.Resume()
		} // else that peer is gone (stopped with its transport or replaced): nothing to mend
		delete(c.cut, l)
	}
}

// applyLinks applies every link of member i, in both directions. c.mu is
// held.
func (c *Cluster) applyLinks(i int) {
	for j := range c.members {
		if j != i {
			c.applyLink(link{i, j})
			c.applyLink(link{j, i})
		}
	}
}

// enforce re-applies the partitions in effect every tick until stop is
// closed: a member that restarts, or that applies a snapshot from the
// leader, gets new peers, which start unpaused. It does nothing while no
// partition is in effect.
func (c *Cluster) enforce(stop <-chan struct{}) {
	t := time.NewTicker(2 * tickMs * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		if len(c.isolated)+len(c.muted)+len(c.cut) > 0 {
			for i := range c.members {
				for j := range c.members {
					if i != j {
						c.applyLink(link{i, j})
					}
				}
			}
		}
		c.mu.Unlock()
	}
}
