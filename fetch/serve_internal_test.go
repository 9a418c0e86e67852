package fetch

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/store"
)

// servedAt reads blocks cs through a serving store capped at rate bytes per
// second with burst, one after another from an idle start, and returns how
// long after the start each was handed out (in a synctest bubble: the
// limiter's waits only).
func servedAt(t *testing.T, rate, burst int64, n int) []time.Duration {
	t.Helper()
	var out []time.Duration
	synctest.Test(t, func(t *testing.T) {
		st, err := store.New(store.Config{InMemory: true, Quota: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var cs []cid.Cid
		for i := range n {
			b := testBlock(t, bytes.Repeat([]byte{byte(i + 1)}, 1<<20))
			if err := st.Put(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, b.Cid())
		}
		var served atomic.Int64
		ss := newServingStore(st, rate, burst, -1, &served)
		start := time.Now()
		for _, c := range cs {
			if _, err := ss.Get(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			out = append(out, time.Since(start))
		}
		if served.Load() != int64(n)<<20 {
			t.Errorf("served %d bytes, want %d", served.Load(), n<<20)
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
