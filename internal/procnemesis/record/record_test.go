package record

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestReadTorn: lines written by Put read back in order; a torn last line
// (a process killed mid-write) is counted, not parsed.
func TestReadTorn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.jsonl")
	l, err := Open(path, 1)
	if err != nil {
		t.Fatal(err)
	}
	l.Put(Line{Kind: Grant, Key: "k", Token: 7})
	l.Put(Line{Kind: Call, ID: 1, Reg: RegEtcd, Write: true, Value: 3, Token: 7})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"k":"ret","id":1,"sta`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	lines, torn, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if torn != 1 || len(lines) != 2 || lines[0].Kind != Grant || lines[0].Token != 7 ||
		lines[1].Kind != Call || !lines[1].Write || lines[1].Value != 3 || lines[1].At <= 0 {
		t.Errorf("Read = %+v, torn %d; want the grant and the call, 1 torn", lines, torn)
	}
}
