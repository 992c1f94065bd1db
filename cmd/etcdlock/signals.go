package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"

	"github.com/etcdlock/etcdlock/internal/cmdline"
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
				if !cmdline.CausedBySignal(ctx) && !send(syscall.SIGTERM) {
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

// cancelOnStop returns a context that ends, with an *cmdline.Interrupted cause,
// when one of cmdline.StopSignals arrives on sigs; other signals are dropped (no
// CMD runs yet to take them). The returned stop ends the watch, waits for
// its goroutine, cancels ctx, and returns the interruption, if any.
func cancelOnStop(parent context.Context, sigs <-chan os.Signal) (ctx context.Context, stop func() *cmdline.Interrupted) {
	// Not parent's end: watchSignals turns it into a SIGTERM on sigs.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case sig := <-sigs:
				if slices.Contains(cmdline.StopSignals, sig) {
					cancel(&cmdline.Interrupted{Sig: sig})
				}
			case <-done:
				return
			}
		}
	})
	return ctx, func() *cmdline.Interrupted {
		close(done)
		wg.Wait()
		var intr *cmdline.Interrupted
		errors.As(context.Cause(ctx), &intr)
		cancel(nil)
		return intr
	}
}
