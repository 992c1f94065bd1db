//go:build unix

package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"testing"
	"time"
)

// TestPositional checks how names, flags after them and CMD are split.
func TestPositional(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		name       string
		rest       []string
		ttl        time.Duration
		shared     bool
		wantErr    bool
		wantHelp   bool
		wantBadFlg bool
	}{
		{args: []string{"x", "--", "cmd", "-a"}, name: "x", rest: []string{"cmd", "-a"}},
		{args: []string{"x", "cmd", "--ttl", "3s"}, name: "x", rest: []string{"cmd", "--ttl", "3s"}},
		{args: []string{"--ttl", "2s", "x", "--shared", "--", "cmd"}, name: "x", rest: []string{"cmd"}, ttl: 2 * time.Second, shared: true},
		{args: []string{"x", "--ttl", "3s", "cmd", "--", "y"}, name: "x", rest: []string{"cmd", "--", "y"}, ttl: 3 * time.Second},
		{args: []string{"--", "-x", "cmd"}, name: "-x", rest: []string{"cmd"}},
		{args: []string{}, wantErr: true},
		{args: []string{"x", "-h"}, wantHelp: true},
		{args: []string{"x", "--bogus"}, wantBadFlg: true},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		ttl := fs.Duration("ttl", 0, "")
		shared := fs.Bool("shared", false, "")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		names, rest, err := positional(fs, 1, "NAME")
		switch {
		case tc.wantHelp:
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("%q: err %v, want ErrHelp", tc.args, err)
			}
		case tc.wantBadFlg:
			if !errors.Is(err, errFlagParse) {
				t.Errorf("%q: err %v, want errFlagParse", tc.args, err)
			}
		case tc.wantErr:
			if err == nil {
				t.Errorf("%q: no error", tc.args)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case names[0] != tc.name || !slices.Equal(rest, tc.rest) || *ttl != tc.ttl || *shared != tc.shared:
			t.Errorf("%q: name %q rest %q ttl %v shared %v; want %q %q %v %v",
				tc.args, names[0], rest, *ttl, *shared, tc.name, tc.rest, tc.ttl, tc.shared)
		}
	}
}

// TestNewTiming checks the grace period's default and bounds.
func TestNewTiming(t *testing.T) {
	for _, tc := range []struct {
		ttl   time.Duration
		grace optDuration
		want  time.Duration
		ok    bool
	}{
		{10 * time.Second, optDuration{}, time.Second, true},
		{time.Second, optDuration{}, 100 * time.Millisecond, true},
		{5 * time.Second, optDuration{}, 500 * time.Millisecond, true},
		{10 * time.Second, optDuration{d: 1999 * time.Millisecond, set: true}, 1999 * time.Millisecond, true},
		{10 * time.Second, optDuration{d: 0, set: true}, 0, true},
		{10 * time.Second, optDuration{d: 2 * time.Second, set: true}, 0, false},
		{10 * time.Second, optDuration{d: -time.Second, set: true}, 0, false},
		{1500 * time.Millisecond, optDuration{}, 0, false},
		{0, optDuration{}, 0, false},
	} {
		tm, err := newTiming(tc.ttl, tc.grace)
		if (err == nil) != tc.ok || (tc.ok && (tm.grace != tc.want || tm.grace >= tm.margin || tm.margin != tc.ttl/5)) {
			t.Errorf("newTiming(%v, %+v) = %+v, %v; want grace %v, ok %v", tc.ttl, tc.grace, tm, err, tc.want, tc.ok)
		}
	}
}

// TestHolderDesc checks that status can read back the start time run and
// elect write, and the lease elect reads from a key.
func TestHolderDesc(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.FixedZone("x", 3600))
	got, ok := parseSince(holderDesc(start))
	if !ok || !got.Equal(start.Truncate(time.Millisecond)) {
		t.Errorf("parseSince(holderDesc(%v)) = %v, %v", start, got, ok)
	}
	if _, ok := parseSince("host:42"); ok {
		t.Error("parseSince of a plain holder succeeded")
	}
}
