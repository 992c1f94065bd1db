package backoff

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDoublesToCapAndResets(t *testing.T) {
	b := New(time.Millisecond, 5*time.Millisecond)
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
		if err := b.Sleep(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	want := []time.Duration{1, 2, 4, 5, 5}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("pauses %v, want %v ms", got, want)
		}
	}
	b.Reset()
	if b.Next() != time.Millisecond {
		t.Fatalf("after Reset: %v", b.Next())
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	cause := errors.New("stop")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	if err := New(time.Hour, time.Hour).Sleep(ctx); !errors.Is(err, cause) {
		t.Fatalf("Sleep on an ended context: %v, want its cause", err)
	}
	if err := Sleep(ctx, 0); !errors.Is(err, cause) {
		t.Fatalf("Sleep(0) on an ended context: %v, want its cause", err)
	}
	if err := Sleep(context.Background(), 0); err != nil {
		t.Fatalf("Sleep(0): %v", err)
	}
}
