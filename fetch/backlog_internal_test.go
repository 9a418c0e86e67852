package fetch

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// TestStoreBacklogWait: a block waits while it does not fit beside the
// bytes being stored, until some are stored, for at most the wait given,
// or until the context ends; with nothing being stored any block fits.
func TestStoreBacklogWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := newStoreBacklog(4 << 20)
		waited := func(ctx context.Context, n int) time.Duration {
			start := time.Now()
			b.wait(ctx, n, time.Second)
			return time.Since(start)
		}
		if d := waited(ctx, 8<<20); d != 0 {
			t.Errorf("a block over the limit, nothing being stored: waited %v, want 0", d)
		}
		b.add(4 << 20)
		got := make(chan time.Duration)
		go func() { got <- waited(ctx, 1<<20) }()
		time.Sleep(300 * time.Millisecond)
		b.done(1 << 20) // 3 MiB being stored: 1 more fits
		if d := <-got; d != 300*time.Millisecond {
			t.Errorf("waited %v, want 300ms (until a block was stored)", d)
		}
		if d := waited(ctx, 2<<20); d != time.Second {
			t.Errorf("waited %v for a block that does not fit, want the 1s given", d)
		}
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(200*time.Millisecond, cancel)
		if d := waited(cctx, 2<<20); d != 200*time.Millisecond {
			t.Errorf("waited %v, want 200ms (until the context ended)", d)
		}
		if n := b.storing(); n != 3<<20 {
			t.Errorf("storing() = %d, want %d", n, 3<<20)
		}
	})
}
