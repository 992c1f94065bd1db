// Package record is the history format of the process-level fault suite
// (internal/procnemesis): each holder process appends one JSON object per
// line to a file of its own, with one write per line, so that a line
// written before the process is killed is complete, and at most the last
// line of a killed process is torn.
//
// Times are nanoseconds since the run's start, taken from the system's
// wall clock (time.Now().UnixNano() less the start's), which every process
// on one host reads alike: the suite and its holders compare their times
// directly. A step of the host's clock during a run would skew them; the
// suite records its own start in both clocks and reports the drift.
//
// It depends on nothing but the standard library, so that the holder
// binary links neither the etcd server nor the suite.
package record

import (
	"encoding/json"
	"os"
	"sync"
	"time"
)

// Kinds of Line.
const (
	// Grant: the library granted the hold Key/Token/Lease; Invoke and
	// Return bound the acquire call, RPost is the revision of a
	// linearizable read made after it returned (0 if it failed).
	Grant = "grant"
	// Call: access ID to register Reg begins (a write of Value if Write).
	Call = "call"
	// Ret: access ID ended with Status ("ok", "rejected", "unknown", or
	// "aborted": it failed before taking effect) and, for an ok read, Value.
	Ret = "ret"
	// Unlock: the holder asked to unlock Key/Token at At (Err: how it went).
	Unlock = "unlock"
	// Done: the hold Key/Token's Done closed at At, for Cause.
	Done = "done"
	// Freeze: the holder, holding Key/Token in its critical section
	// between its reads and its writes, is about to stop itself with
	// SIGSTOP, as the suite asked.
	Freeze = "freeze"
	// Linger: the holder, holding Key/Token at its critical section's
	// pause point, as the suite asked, waits there for three TTLs or until
	// the hold's Done closes, whichever comes first: a long job that
	// watches its hold.
	Linger = "linger"
	// Job: a job run by `etcdlock run` started as process PID, child of PPID.
	Job = "job"
)

// Registers an access goes to.
const (
	RegEtcd = "etcd" // fenced by fencing.Commit
	RegSQL  = "sql"  // fenced by sqlfence in SQLite
	RegCtl  = "ctl"  // the unfenced control, in etcd
)

// Line is one record.
type Line struct {
	Kind   string `json:"k"`
	At     int64  `json:"at"`
	Key    string `json:"key,omitempty"`
	Token  int64  `json:"token,omitempty"`
	Lease  int64  `json:"lease,omitempty"`
	Invoke int64  `json:"invoke,omitempty"`
	Return int64  `json:"return,omitempty"`
	RPost  int64  `json:"r_post,omitempty"`
	ID     int64  `json:"id,omitempty"`
	Reg    string `json:"reg,omitempty"`
	Write  bool   `json:"write,omitempty"`
	Value  int64  `json:"value,omitempty"`
	Status string `json:"status,omitempty"`
	Cause  string `json:"cause,omitempty"`
	// Acked, on a Done line: until when etcd had acknowledged the hold's
	// lease (nemesis.Grant.LeaseAcked), if known.
	Acked int64  `json:"acked,omitempty"`
	Err   string `json:"err,omitempty"`
	PID   int    `json:"pid,omitempty"`
	PPID  int    `json:"ppid,omitempty"`
}

// Log appends Lines to a file. It is safe for concurrent use.
type Log struct {
	start int64
	mu    sync.Mutex
	f     *os.File
	err   error
}

// Open opens (creating or appending to) the history file path of a run
// that started at start (Unix nanoseconds).
func Open(path string, start int64) (*Log, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &Log{start: start, f: f}, nil
}

// Now returns the time since the run's start.
func (l *Log) Now() int64 { return time.Now().UnixNano() - l.start }

// At returns t as the time since the run's start.
func (l *Log) At(t time.Time) int64 { return t.UnixNano() - l.start }

// Put appends line with one write; At is set to Now if zero. The first
// error is kept for Close.
func (l *Log) Put(line Line) {
	if line.At == 0 {
		line.At = l.Now()
	}
	b, err := json.Marshal(line)
	if err != nil {
		panic(err) // only plain fields: cannot happen
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(b); err != nil && l.err == nil {
		l.err = err
	}
}

// Close closes the file and returns the first error of Put or Close.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.f.Close(); err != nil && l.err == nil {
		l.err = err
	}
	return l.err
}

// Read parses the lines of a history file; a line that does not parse
// (the torn last line of a killed process) is skipped and counted.
func Read(path string) (lines []Line, torn int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	start := 0
	for i, c := range b {
		if c != '\n' {
			continue
		}
		var l Line
		if json.Unmarshal(b[start:i], &l) == nil {
			lines = append(lines, l)
		} else {
			torn++
		}
		start = i + 1
	}
	if start < len(b) {
		torn++
	}
	return lines, torn, nil
}
