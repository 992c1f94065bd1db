package nemesis

import (
	"strings"
	"testing"
	"time"
)

// checkLockDelay flags a grant within the delay of every unclean loss,
// whether anyone waited or not, and nothing after a clean release, after
// the delay, or after a waiter at the head gave up (its holding record
// deleted with its key).
func TestCheckLockDelay(t *testing.T) {
	const ns, d = "n/", 2 * time.Second
	key := func(s string) string { return ns + "mutex/x/" + s }
	sec := int64(time.Second)
	// a holds from 10 and is lost at 20 (received at 1 s); b waits from 12.
	a := &life{key: key("a"), create: 10, admit: 10, del: 20, delAt: 1 * sec}
	b := &life{key: key("b"), create: 12, admit: 20}
	grant := func(l *life, ret int64) *Grant { return &Grant{Worker: "w", Key: l.key, Token: l.create, Return: ret} }
	c := &life{key: key("c"), create: 14, del: 21} // a waiter that died too
	marker := Event{Rev: 20, Key: ns + "released/mutex/x/a", Value: "10"}

	for _, c := range []struct {
		name   string
		events []Event
		lives  []*life
		ret    int64
		want   bool
	}{
		{"unclean, granted early", nil, []*life{a, b}, 2 * sec, true},
		{"unclean, granted after the delay", nil, []*life{a, b}, 3 * sec, false},
		{"clean", []Event{marker}, []*life{a, b}, 1 * sec, false},
		{"marker of another key", []Event{{Rev: 20, Key: ns + "released/mutex/x/b", Value: "10"}}, []*life{a, b}, 2 * sec, true},
		{"nobody waited", nil, []*life{a, {key: key("c"), create: 30, admit: 30}}, 2 * sec, true},
		{"nobody waited, granted after the delay", nil, []*life{a, {key: key("c"), create: 30, admit: 30}}, 3 * sec, false},
		{"the waiter died too", nil, []*life{a, {key: key("d"), create: 30, admit: 30}, c}, 2 * sec, true},
		{"gave up", []Event{{Rev: 20, Delete: true, Key: ns + "lockdelay-held/mutex/x/a"}}, []*life{a, b}, 2 * sec, false},
		{"record of another key dropped", []Event{{Rev: 20, Delete: true, Key: ns + "lockdelay-held/mutex/x/b"}}, []*life{a, b}, 2 * sec, true},
	} {
		g := grant(c.lives[1], c.ret)
		got := checkLockDelay(ns, c.lives, c.events, []*Grant{g}, d)
		if (len(got) > 0) != c.want {
			t.Errorf("%s: findings %v, want some: %v", c.name, got, c.want)
		}
		for _, f := range got {
			if f.Checker != CheckGrants || !strings.Contains(f.What, "lock-delay") {
				t.Errorf("%s: finding %+v", c.name, f)
			}
		}
	}
}
