package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// signals delivers, on C, the signals run and elect forward to CMD, for as
// long as the command runs.
type signals struct {
	C    <-chan os.Signal
	raw  chan os.Signal
	done chan struct{}
	wg   sync.WaitGroup
}

// watchSignals starts catching forwardedSignals (those not ignored when
// etcdlock started: SIGHUP under nohup stays ignored) and droppedSignals.
//
// The end of ctx counts as a SIGTERM, unless a signal ended it: main's
// context ends on SIGINT and SIGTERM, which C delivers anyway. So an
// in-process caller that cancels ctx stops the command as SIGTERM would.
// Call stop when done.
func watchSignals(ctx context.Context) *signals {
	s := &signals{raw: make(chan os.Signal, 16), done: make(chan struct{})}
	for _, sig := range forwardedSignals {
		if !signal.Ignored(sig) {
			signal.Notify(s.raw, sig)
		}
	}
	if len(droppedSignals) > 0 {
		signal.Notify(s.raw, droppedSignals...)
	}
	out := make(chan os.Signal, 16)
	s.C = out
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctxDone := ctx.Done()
		send := func(sig os.Signal) bool {
			select {
			case out <- sig:
				return true
			case <-s.done:
				return false
			}
		}
		for {
			select {
			case sig := <-s.raw:
				if slices.Contains(droppedSignals, sig) {
					continue
				}
				if !send(sig) {
					return
				}
			case <-ctxDone:
				ctxDone = nil
				if !causedBySignal(ctx) && !send(syscall.SIGTERM) {
					return
				}
			case <-s.done:
				return
			}
		}
	}()
	return s
}

// stop stops catching the signals and waits for the goroutine.
func (s *signals) stop() {
	signal.Stop(s.raw)
	close(s.done)
	s.wg.Wait()
}

// causedBySignal reports whether ctx was ended by signal.NotifyContext,
// whose cause is an unexported error that matches context.Canceled and
// says "<signal> signal received".
func causedBySignal(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return cause != nil && cause != context.Canceled && errors.Is(cause, context.Canceled) &&
		strings.HasSuffix(cause.Error(), " signal received")
}

// interrupted is the cause of a context that a stop signal ended.
type interrupted struct{ sig os.Signal }

func (i *interrupted) Error() string { return "interrupted by " + signalName(i.sig) }

// interruptStatus returns the exit status for an interruption by i's
// signal: 128+N.
func (i *interrupted) status() int { return exitSignalBase + signalNumber(i.sig) }

// cancelOnStop returns a context that ends, with an *interrupted cause,
// when one of stopSignals arrives on sigs; other signals are dropped (no
// CMD runs yet to take them). The returned stop ends the watch, waits for
// its goroutine, cancels ctx, and returns the interruption, if any.
func cancelOnStop(parent context.Context, sigs <-chan os.Signal) (ctx context.Context, stop func() *interrupted) {
	// Not parent's end: watchSignals turns it into a SIGTERM on sigs.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case sig := <-sigs:
				if slices.Contains(stopSignals, sig) {
					cancel(&interrupted{sig})
				}
			case <-done:
				return
			}
		}
	})
	return ctx, func() *interrupted {
		close(done)
		wg.Wait()
		var intr *interrupted
		errors.As(context.Cause(ctx), &intr)
		cancel(nil)
		return intr
	}
}
