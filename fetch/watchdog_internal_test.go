package fetch

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestWatchdogAfterSleep: an origin request's watchdog whose timer fires
// late (the process slept through it: a laptop whose monotonic clock
// counts the sleep, as on Windows) cuts the request, whose connection the
// sleep left suspect, with errSlept, which is no timeout of the origin's
// (originFatal would end the origin for the fetch); one on time cuts with
// an error matching context.DeadlineExceeded, as before. (Timers in a
// synctest bubble fire when due, so the test stops the watchdog's timer
// and fires it late itself.)
func TestWatchdogAfterSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cancelled, cut atomic.Bool
		w := newWatchdog(10*time.Second, "under 16 KiB of body", func() { cancelled.Store(true) })
		w.mu.Lock()
		w.timer.Stop()
		w.mu.Unlock()
		time.Sleep(30 * time.Second) // asleep
		w.fire()
		if !cancelled.Load() {
			t.Fatal("the suspect request was not cut at the wake")
		}
		err := w.explain(errors.New("read: canceled"))
		if !errors.Is(err, errSlept) || errors.Is(err, context.DeadlineExceeded) || originFatal(err) {
			t.Fatalf("cut at the wake: %v, want errSlept, not a timeout nor fatal", err)
		}

		w2 := newWatchdog(10*time.Second, "no response headers", func() { cut.Store(true) })
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if !cut.Load() {
			t.Fatal("a watchdog on time did not cut")
		}
		if err := w2.explain(errors.New("read: canceled")); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errSlept) {
			t.Fatalf("cut on time: %v, want a match of context.DeadlineExceeded", err)
		}
		w2.stop()
	})
}
