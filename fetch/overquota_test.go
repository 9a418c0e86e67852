package fetch_test

import (
	"testing"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestFileOverQuotaFetchedOnce: a file larger than the store's quota is
// read once from the origin, every leaf fetched once: its leaves are kept
// in memory (within the window) until read, not stored ahead and evicted
// before the reader came back for them (a 5 MiB file through a 1 MiB
// store cost the origin 7 MiB).
func TestFileOverQuotaFetchedOnce(t *testing.T) {
	a := makeAsset(t, 9, 5*MiB+3)
	for _, quota := range []int64{1 * MiB, 3 * MiB} {
		o := newOrigin(t, a.data)
		cl := newNode(t, fetch.Config{Store: newStore(t, quota)})
		tg := a.t
		tg.URL = o.URL
		st := cl.fetchWhole(t, tg, a.data)
		if got := o.sent.Load(); got != int64(len(a.data)) || st.OriginBytes != int64(len(a.data)) {
			t.Errorf("quota %d MiB: origin sent %d bytes, fetch took %d; want the file's %d once", quota/MiB, got, st.OriginBytes, len(a.data))
		}
	}
}
