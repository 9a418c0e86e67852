package fetch

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/store"
)

// blocksHeld returns an in-memory store, closed when the test ends, holding
// n different 1 MiB blocks, and their CIDs.
func blocksHeld(t *testing.T, n int) (*store.Store, []cid.Cid) {
	t.Helper()
	st, err := store.New(store.Config{InMemory: true, Quota: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var cs []cid.Cid
	for i := range n {
		b := testBlock(t, bytes.Repeat([]byte{byte(i + 1)}, 1<<20))
		if err := st.Put(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, b.Cid())
	}
	return st, cs
}

// servedAt reads blocks cs through a serving store capped at rate bytes per
// second with burst, one after another from an idle start, and returns how
// long after the start each was handed out (in a synctest bubble: the
// limiter's waits only).
func servedAt(t *testing.T, rate, burst int64, n int) []time.Duration {
	t.Helper()
	var out []time.Duration
	synctest.Test(t, func(t *testing.T) {
		st, cs := blocksHeld(t, n)
		ss := newServingStore(st, rate, burst, -1, nil, nil)
		start := time.Now()
		for _, c := range cs {
			if _, err := ss.Get(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			out = append(out, time.Since(start))
		}
	})
	return out
}

// TestServeBurst: a holder capped at 2 MiB/s with a burst of 4 MiB hands
// out its first four 1 MiB blocks at once, then one every half second (the
// cap holds on average); with the default burst (one block) every block
// after the first waits for the cap.
func TestServeBurst(t *testing.T) {
	const mib = 1 << 20
	got := servedAt(t, 2*mib, 4*mib, 8)
	for i, d := range got {
		want := time.Duration(0)
		if i >= 4 {
			want = time.Duration(i-3) * 500 * time.Millisecond
		}
		if d != want {
			t.Errorf("burst 4 MiB: block %d served after %v, want %v", i, d, want)
		}
	}
	got = servedAt(t, 2*mib, 0, 4)
	for i, d := range got {
		if want := time.Duration(i) * 500 * time.Millisecond; d != want {
			t.Errorf("default burst: block %d served after %v, want %v", i, d, want)
		}
	}
}

// readCounter is a Store that counts the blocks read from it.
type readCounter struct {
	Store
	reads atomic.Int64
}

func (r *readCounter) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	r.reads.Add(1)
	return r.Store.Get(ctx, c)
}

// TestServeCapReadsLate: a holder at its serving cap reads a block only once
// the cap lets it go, so that the blocks waiting for the cap are not held in
// memory (boxo's server asks for MaxOutstandingBytesPerPeer of blocks per
// peer at once).
func TestServeCapReadsLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, cs := blocksHeld(t, 3)
		rc := &readCounter{Store: st}
		ss := newServingStore(rc, 1<<20, 0, -1, nil, nil) // 1 MiB/s, one block of burst
		done := make(chan struct{})
		for _, c := range cs {
			go func() {
				defer func() { done <- struct{}{} }()
				if _, err := ss.Get(context.Background(), c); err != nil {
					t.Error(err)
				}
			}()
		}
		synctest.Wait() // the first is served; two wait for the cap
		if n := rc.reads.Load(); n != 1 {
			t.Errorf("%d blocks read while the cap let one go, want 1", n)
		}
		for range cs {
			<-done
		}
		if n := rc.reads.Load(); n != 3 {
			t.Errorf("%d blocks read in all, want 3", n)
		}
	})
}
