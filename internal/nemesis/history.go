package nemesis

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is what a fenced resource answered to one access.
type Outcome string

// Outcomes of an access.
const (
	// OK: the access was accepted (and, for a read, returned a value).
	OK Outcome = "ok"
	// Rejected: the resource refused the access's token as stale (or, in
	// etcd, the hold's key was no longer current).
	Rejected Outcome = "rejected"
	// Unknown: the request failed or timed out; it may or may not have
	// taken effect.
	Unknown Outcome = "unknown"
)

// never is the return time of an access whose outcome is unknown: it may
// take effect at any time after its call (porcupine's "infinity").
const never = math.MaxInt64

// Grant is one success the library reported: a hold (or term) returned to
// a worker.
type Grant struct {
	Worker string `json:"worker"`
	// Key and Token are the hold's fencing token as reported.
	Key   string `json:"key"`
	Token int64  `json:"token"`
	Lease int64  `json:"lease"`
	// Weight is the number of permits (semaphore), else 1.
	Weight int64 `json:"weight"`
	// Writer is false for a read hold of an RWMutex.
	Writer bool `json:"writer"`
	// Invoke and Return bound the acquire call, in nanoseconds since the
	// run started.
	Invoke int64 `json:"invoke"`
	Return int64 `json:"return"`
	// RPost is the revision of a linearizable read started after the
	// acquire returned: every read the library made to decide the grant
	// had a revision at most RPost. 0 when that read failed.
	RPost int64 `json:"r_post"`
	// UnlockAt is when the worker first asked to unlock (ns since start),
	// 0 if it never did; UnlockErr is the last attempt's error.
	UnlockAt  int64  `json:"unlock_at"`
	UnlockErr string `json:"unlock_err,omitempty"`
	// DoneAt is when the hold's Done channel closed (ns since start), 0 if
	// it never did before the workload ended.
	DoneAt int64 `json:"done_at"`
	// DoneCause is why Done closed: "deadline", "deleted", "expired",
	// "released" or the error's text.
	DoneCause string `json:"done_cause,omitempty"`
	// LeaseAcked, if known (not 0), is until when etcd had acknowledged
	// the hold's lease when Done closed (ns since start): the send time
	// of the last renewal etcd answered plus the TTL it granted. etcd
	// must not expire the lease before then; a lease whose end the
	// watcher saw earlier was revoked early by etcd (see checkGrants).
	LeaseAcked int64 `json:"lease_acked,omitempty"`

	doneAt    atomic.Int64
	doneCause atomic.Pointer[string]
}

// Access is one access to a fenced (or, in a control, unfenced) register.
type Access struct {
	Client int    `json:"client"` // porcupine client id
	Worker string `json:"worker"`
	Write  bool   `json:"write"`
	// Writer is false for the accesses of a read hold (RWMutex).
	Writer bool    `json:"writer"`
	Token  int64   `json:"token"`
	Value  int64   `json:"value"` // written, or read when OK
	Status Outcome `json:"status"`
	Call   int64   `json:"call"`
	Ret    int64   `json:"ret"` // never for Unknown
}

// Observation is one leader reported by Election.Observe.
type Observation struct {
	Key   string `json:"key"`
	Token int64  `json:"token"`
	Value string `json:"value"`
	At    int64  `json:"at"`
}

// History is everything a workload recorded. It is safe for concurrent use.
type History struct {
	start time.Time

	mu       sync.Mutex
	grants   []*Grant
	accesses []Access
	observed []Observation
	nextID   int
	pauses   int // holder pauses taken
	long     int // of which lasted their full 2 TTL or more
}

func newHistory(start time.Time) *History { return &History{start: start} }

// now returns nanoseconds since the run started (monotonic).
func (h *History) now() int64 { return int64(time.Since(h.start)) }

func (h *History) clientID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.nextID
	h.nextID++
	return id
}

func (h *History) addGrant(g *Grant) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.grants = append(h.grants, g)
}

func (h *History) addAccess(a Access) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.accesses = append(h.accesses, a)
}

func (h *History) addObservation(o Observation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.observed = append(h.observed, o)
}

func (h *History) addPause(long bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pauses++
	if long {
		h.long++
	}
}

// snapshot returns the records; call it once the workers have stopped.
func (h *History) snapshot() ([]*Grant, []Access, []Observation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range h.grants {
		g.DoneAt = g.doneAt.Load()
		if c := g.doneCause.Load(); c != nil {
			g.DoneCause = *c
		}
	}
	return append([]*Grant(nil), h.grants...), append([]Access(nil), h.accesses...), append([]Observation(nil), h.observed...)
}
