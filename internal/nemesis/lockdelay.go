package nemesis

import (
	"strconv"
	"strings"
	"time"
)

// lockDelayOf is the lock-delay of the mutex-lockdelay workload: two TTLs.
func lockDelayOf(cfg Config) time.Duration { return 2 * cfg.TTL }

// delayTolerance is how much sooner than the delay after the watcher
// received an unclean loss a grant may return before checkLockDelay calls
// it early: the watcher receives the delete after etcd decided it, so its
// time is late by its own lag, which this absorbs.
const delayTolerance = 250 * time.Millisecond

// checkLockDelay is the lock-delay part of checker (1), for the
// mutex-lockdelay workload. An unclean loss is the delete of a head key
// (admitted when deleted) with no clean-release marker put in the same
// revision (the put of "<ns>released/<key minus ns>" valued with the
// key's create revision, which every release of the library writes in its
// delete's transaction) and no delete of its holding record in that
// revision ("<ns>lockdelay-held/<key minus ns>", which a release deletes
// with the key, and a waiter that gives up too: it never held). After
// every unclean loss, whether or not anyone waited, no reported grant
// admitted after the loss may return within d of when the watcher
// received it (less delayTolerance).
func checkLockDelay(ns string, lives []*life, events []Event, grants []*Grant, d time.Duration) []Finding {
	type put struct {
		rev int64
		key string
	}
	markers := make(map[put]string)
	dropped := make(map[put]bool) // holding records deleted, by revision
	for _, ev := range events {
		switch {
		case !ev.Delete && strings.HasPrefix(ev.Key, ns+"released/"):
			markers[put{ev.Rev, ev.Key}] = ev.Value
		case ev.Delete && strings.HasPrefix(ev.Key, ns+"lockdelay-held/"):
			dropped[put{ev.Rev, ev.Key}] = true
		}
	}
	byToken := make(map[put]*life)
	for _, l := range lives {
		byToken[put{l.create, l.key}] = l
	}
	var out []Finding
	for _, l := range lives {
		if l.del == 0 || l.admit == 0 || l.admit > l.del {
			continue // not a holder's loss
		}
		if markers[put{l.del, ns + "released/" + strings.TrimPrefix(l.key, ns)}] == strconv.FormatInt(l.create, 10) {
			continue // clean
		}
		if dropped[put{l.del, ns + "lockdelay-held/" + strings.TrimPrefix(l.key, ns)}] {
			continue // a waiter that gave up
		}
		for _, g := range grants {
			gl := byToken[put{g.Token, g.Key}]
			if gl == nil || gl.admit < l.del {
				continue
			}
			if early := l.delAt + int64(d) - int64(delayTolerance) - g.Return; early > 0 {
				out = append(out, Finding{CheckGrants, "lock-delay: " + g.Worker + ": grant " + strconv.FormatInt(g.Token, 10) + "@" + g.Key +
					" returned " + ms2(g.Return-l.delAt) + " after the unclean loss of " + strconv.FormatInt(l.create, 10) + "@" + l.key +
					" at revision " + strconv.FormatInt(l.del, 10) + ", lock-delay " + d.String()})
			}
		}
	}
	return out
}
