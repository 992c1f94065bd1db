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
// revision: the put of "<ns>released/<key minus ns>" valued with the key's
// create revision, which every release of the library writes in its
// delete's transaction. After an unclean loss that a waiter in line saw
// (a key of the lock alive at the loss whose grant was later reported: a
// loss whose waiters all died too is not delayed, see package lock's
// WithLockDelay), no reported grant admitted after the loss may return
// within d of when the watcher received it (less delayTolerance).
func checkLockDelay(ns string, lives []*life, events []Event, grants []*Grant, d time.Duration) []Finding {
	type put struct {
		rev int64
		key string
	}
	markers := make(map[put]string)
	for _, ev := range events {
		if !ev.Delete && strings.HasPrefix(ev.Key, ns+"released/") {
			markers[put{ev.Rev, ev.Key}] = ev.Value
		}
	}
	byToken := make(map[put]*life)
	for _, l := range lives {
		byToken[put{l.create, l.key}] = l
	}
	granted := make(map[put]bool)
	for _, g := range grants {
		granted[put{g.Token, g.Key}] = true
	}
	var out []Finding
	for _, l := range lives {
		if l.del == 0 || l.admit == 0 || l.admit > l.del {
			continue // not a holder's loss
		}
		if markers[put{l.del, ns + "released/" + strings.TrimPrefix(l.key, ns)}] == strconv.FormatInt(l.create, 10) {
			continue // clean
		}
		waited := false
		for _, o := range lives {
			if o != l && o.create < l.del && (o.del == 0 || o.del > l.del) && granted[put{o.create, o.key}] {
				waited = true
				break
			}
		}
		if !waited {
			continue
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
