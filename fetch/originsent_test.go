package fetch_test

import (
	"context"
	"io"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestOriginSentAccounting: what the origin sent is counted besides what
// was kept. A whole fetch from the origin counts exactly the file; a fetch
// closed while origin requests are mid-body counts what those requests
// read and threw away (and an estimate of what was in flight), within a
// few socket writes of what the origin itself counted.
func TestOriginSentAccounting(t *testing.T) {
	a := makeAsset(t, 91, 6*MiB+17)
	o := newOrigin(t, a.data)
	tg := a.t
	tg.URL = o.URL
	cl := newNode(t, fetch.Config{})

	r, err := cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, readAll(t, r), a.data)
	st := r.Stats()
	r.Close()
	size := int64(len(a.data))
	if st.OriginSentBytes != size || st.OriginWastedBytes != 0 || o.sent.Load() != size {
		t.Errorf("whole fetch: sent %d, wasted %d (origin counted %d), want %d and 0",
			st.OriginSentBytes, st.OriginWastedBytes, o.sent.Load(), size)
	}

	// A paced origin: the fetch is closed after its first leaf, with the
	// next leaves' requests part-way through their bodies.
	b := makeAsset(t, 92, 12*MiB)
	o2 := newOrigin(t, b.data)
	o2.limit = rate.NewLimiter(4*MiB, 64<<10)
	tg = b.t
	tg.URL = o2.URL
	r, err = cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, make([]byte, MiB+1)); err != nil {
		t.Fatal(err)
	}
	// Close once the origin is part-way through bodies not yet delivered.
	deadline := time.Now().Add(20 * time.Second)
	for o2.sent.Load() < r.Stats().OriginBytes+256<<10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r.Close()
	o2.Close() // waits for the handlers: their count is final
	st = r.Stats()
	server := o2.sent.Load()
	t.Logf("cut fetch: kept %d, sent %d, wasted %d; the origin counted %d", st.OriginBytes, st.OriginSentBytes, st.OriginWastedBytes, server)
	if st.OriginWastedBytes <= 0 || st.OriginSentBytes <= st.OriginBytes {
		t.Errorf("cut fetch: sent %d, kept %d, wasted %d: the cut requests' bytes are not counted", st.OriginSentBytes, st.OriginBytes, st.OriginWastedBytes)
	}
	// The origin's count includes what sat in socket buffers when the
	// connections were cut (a few 64 KiB writes per request at this
	// pace), ours an estimate of it (at most 256 KiB per cut request).
	const slack = MiB
	if d := st.OriginSentBytes - server; d > slack || d < -slack {
		t.Errorf("cut fetch: counted %d sent, the origin counted %d (more than %d apart)", st.OriginSentBytes, server, slack)
	}
	tot := cl.f.Stats()
	if tot.OriginSentBytes != size+st.OriginSentBytes || tot.OriginWastedBytes != tot.OriginSentBytes-tot.OriginBytes {
		t.Errorf("Totals: sent %d, wasted %d, kept %d; want sent %d", tot.OriginSentBytes, tot.OriginWastedBytes, tot.OriginBytes, size+st.OriginSentBytes)
	}
}
