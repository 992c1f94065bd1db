package nemesis

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/fencing"
)

// The SQL registers' outcomes: the fenced one refuses a token older than
// one it admitted, and leaves the counter as the newer holder wrote it;
// the control accepts it. close removes the database's directory.
func TestSQLRegister(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := openSQL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	tok := func(rev int64) fencing.Token {
		return fencing.Token{Key: "ns/mutex/x/" + string(rune('a'+rev%26)), Revision: rev}
	}
	for _, r := range []*sqlRegister{
		{db: s.db, fence: s.fence, name: "fenced"},
		{db: s.db, name: "control"},
	} {
		if err := r.create(ctx); err != nil {
			t.Fatal(err)
		}
		type step struct {
			rev   int64
			write bool
			v     int64
			want  Outcome
			read  int64
		}
		stale := Rejected
		if r.fence == nil {
			stale = OK
		}
		steps := []step{
			{10, false, 0, OK, 0},
			{10, true, 1, OK, 1},
			{12, false, 0, OK, 1},
			{12, true, 2, OK, 2},
			{10, true, 1, stale, 1}, // the paused holder's write
		}
		for i, st := range steps {
			v, got := r.access(ctx, tok(st.rev), st.write, st.v)
			if got != st.want || (got == OK && v != st.read) {
				t.Errorf("%s: step %d (token %d, write %v): %s %d, want %s %d", r.name, i, st.rev, st.write, got, v, st.want, st.read)
			}
		}
		want := int64(2)
		if r.fence == nil {
			want = 1 // the update of token 12 is lost
		}
		if n, err := r.final(ctx); err != nil || n != want {
			t.Errorf("%s: final value %d (%v), want %d", r.name, n, err, want)
		}
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.dir); !os.IsNotExist(err) {
		t.Errorf("the database's directory %s is left: %v", s.dir, err)
	}
}
