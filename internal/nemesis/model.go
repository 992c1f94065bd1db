package nemesis

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// Porcupine results, the values of Row.Porcupine.
const (
	LinOK       = "ok"
	LinIllegal  = "illegal"
	LinTimeout  = "timeout"
	LinNone     = "n/a"
	LinExpected = "illegal (expected)" // an unfenced control
)

// regInput is one access to the fenced register.
type regInput struct {
	Write  bool
	Writer bool // the token is a writer's (always, except RWMutex readers)
	Token  int64
	Value  int64 // written
}

// regOutput is its outcome.
type regOutput struct {
	Status Outcome
	Value  int64 // read, when OK
}

// regState is the register: the highest token admitted from anyone and
// from a writer, and the value of the last accepted write.
type regState struct {
	All, Wr, Value int64
}

// registerModel is the fenced register: an access is accepted only with a
// token at least the highest admitted (for a reader's access, the highest
// writer token), and a read returns the value of the last accepted write.
// With strict, an access with such a token must be accepted (a fence of
// high-water marks: fencing.Fence, fencing.RWFence); without, a resource may
// refuse more (an etcd transaction guarded by the hold's key refuses a
// holder whose key is gone even when no newer holder acted). An access of
// unknown outcome may or may not have taken effect.
func registerModel(strict bool) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []interface{} { return []interface{}{regState{}} },
		Step: func(state, input, output interface{}) []interface{} {
			s, in, out := state.(regState), input.(regInput), output.(regOutput)
			floor := s.Wr
			if in.Writer {
				floor = s.All
			}
			admitted := in.Token >= floor
			next := s
			next.All = max(s.All, in.Token)
			if in.Writer {
				next.Wr = max(s.Wr, in.Token)
			}
			if in.Write {
				next.Value = in.Value
			}
			switch out.Status {
			case OK:
				if !admitted || (!in.Write && out.Value != s.Value) {
					return nil
				}
				return []interface{}{next}
			case Rejected:
				if strict && admitted {
					return nil
				}
				return []interface{}{s}
			default: // Unknown
				if admitted {
					return []interface{}{s, next}
				}
				return []interface{}{s}
			}
		},
		Equal: func(a, b interface{}) bool { return a.(regState) == b.(regState) },
		DescribeOperation: func(input, output interface{}) string {
			in, out := input.(regInput), output.(regOutput)
			who := "w"
			if !in.Writer {
				who = "r"
			}
			if in.Write {
				return fmt.Sprintf("write(%d) tok %s%d -> %s", in.Value, who, in.Token, out.Status)
			}
			if out.Status == OK {
				return fmt.Sprintf("read tok %s%d -> %d", who, in.Token, out.Value)
			}
			return fmt.Sprintf("read tok %s%d -> %s", who, in.Token, out.Status)
		},
		DescribeState: func(state interface{}) string {
			s := state.(regState)
			return fmt.Sprintf("value %d, highest token %d (writers %d)", s.Value, s.All, s.Wr)
		},
	}
	return nm.ToModel()
}

// operations converts accesses into porcupine operations.
func operations(acc []Access) []porcupine.Operation {
	ops := make([]porcupine.Operation, 0, len(acc))
	for _, a := range acc {
		ops = append(ops, porcupine.Operation{
			ClientId: a.Client,
			Input:    regInput{Write: a.Write, Writer: a.Writer, Token: a.Token, Value: a.Value},
			Call:     a.Call,
			Output:   regOutput{Status: a.Status, Value: a.Value},
			Return:   a.Ret,
		})
	}
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	return ops
}

// checkLinearizable runs porcupine over acc. It returns LinOK, LinIllegal
// or LinTimeout, and writes the visualization to htmlPath when the history
// is not linearizable and htmlPath is not empty.
func checkLinearizable(acc []Access, strict bool, timeout time.Duration, htmlPath string) (string, error) {
	if len(acc) == 0 {
		return LinOK, nil
	}
	model := registerModel(strict)
	ops := operations(acc)
	switch porcupine.CheckOperationsTimeout(model, ops, timeout) {
	case porcupine.Ok:
		return LinOK, nil
	case porcupine.Illegal:
		if htmlPath != "" {
			_, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
			if err := porcupine.VisualizePath(model, info, htmlPath); err != nil {
				_ = os.Remove(htmlPath)
				return LinIllegal, err
			}
		}
		return LinIllegal, nil
	default:
		return LinTimeout, nil
	}
}
