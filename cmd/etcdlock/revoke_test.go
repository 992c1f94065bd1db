//go:build unix

package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/lock"
)

// TestRevoke asks a mutex holder and an election leader to release, and
// checks that both are told, that nobody holding gives exit 3, and that the
// requests go with the holds.
func TestRevoke(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	t.Cleanup(e.requireEmpty) // after the deferred Closes
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := lock.NewMutex(e.cli, "q", lock.WithNamespace(e.ns))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	el, err := election.New(e.cli, "q", election.WithNamespace(e.ns))
	if err != nil {
		t.Fatal(err)
	}
	defer el.Close()
	term, err := el.Campaign(ctx, "boss")
	if err != nil {
		t.Fatal(err)
	}
	conn := []string{"--endpoints", e.srv.Endpoint(), "--namespace", e.ns}

	code, out, errOut := runCmd(t, time.Minute, append(append([]string{"revoke"}, conn...), "--as", "ops", "q")...)
	if code != exitOK {
		t.Fatalf("revoke: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		fmt.Sprintf("asked mutex holder: token %d", h.Token().Revision),
		fmt.Sprintf("asked election leader: token %d", term.Token().Revision), `"boss"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("revoke output lacks %q:\n%s", want, out)
		}
	}
	for what, ch := range map[string]<-chan struct{}{"hold": h.ReleaseRequested(), "term": term.ResignRequested()} {
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s not told of the request", what)
		}
	}
	if err := h.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := term.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitKeys(10*time.Second, "revoke/", 0)

	code, _, errOut = runCmd(t, time.Minute, append(append([]string{"revoke"}, conn...), "q")...)
	if code != exitNobody || !strings.Contains(errOut, "nobody holds") {
		t.Errorf("revoke with nobody holding: exit %d, %s", code, errOut)
	}
	for _, args := range [][]string{{"--kind", "queue", "q"}, {}, {"q", "r"}, {"--as", strings.Repeat("x", lock.MaxRequesterLen+1), "q"}} {
		if code, _, errOut := runCmd(t, time.Minute, append(append([]string{"revoke"}, conn...), args...)...); code != exitUsage {
			t.Errorf("revoke %q: exit %d, want %d: %s", args, code, exitUsage, errOut)
		}
	}
}
