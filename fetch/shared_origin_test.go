package fetch_test

import (
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/internal/testutil"
)

// TestSharedOriginCountedOnce: two fetches of the same file at once share
// each leaf's origin request, and the Fetcher's totals count each leaf once
// as the origin's (the other fetch's copy as local): OriginBytes is what
// the origin delivered and nothing is wasted. Each fetch counted it, so
// the totals said 8 MiB from an origin that sent 4, and the waste formula
// (sent minus kept) went negative, hiding real waste. The metrics' series
// are there from the start, at 0.
func TestSharedOriginCountedOnce(t *testing.T) {
	a := makeAsset(t, 501, 4*MiB)
	o := newOrigin(t, a.data)
	o.limit = rate.NewLimiter(8*MiB, 64<<10)
	tg := a.t
	tg.URL = o.URL
	reg := prometheus.NewRegistry()
	cl := newNode(t, fetch.Config{PrometheusRegisterer: reg})
	origin := map[string]string{"source": "origin"}
	if v, ok := testutil.MetricValue(t, reg, "meshcdn_fetch_bytes_total", origin); !ok || v != 0 {
		t.Errorf("bytes_total{source=origin} before any fetch = %v (a series: %v), want a series at 0", v, ok)
	}
	rs := []*fetch.Reader{cl.open(t, tg), cl.open(t, tg)}
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() { checkBytes(t, readAll(t, r), a.data) })
	}
	wg.Wait()
	for _, r := range rs {
		r.Close()
	}
	tot := cl.f.Stats()
	sent := o.sent.Load()
	if tot.OriginBytes != sent || tot.OriginBytes+tot.LocalBytes != 2*int64(len(a.data)) {
		t.Errorf("totals: origin %d, local %d; the origin sent %d for two reads of %d", tot.OriginBytes, tot.LocalBytes, sent, len(a.data))
	}
	if tot.OriginWastedBytes != 0 || tot.OriginSentBytes != sent {
		t.Errorf("totals: origin sent %d, wasted %d; the origin sent %d, all kept", tot.OriginSentBytes, tot.OriginWastedBytes, sent)
	}
	if v, _ := testutil.MetricValue(t, reg, "meshcdn_fetch_bytes_total", origin); v != float64(sent) {
		t.Errorf("bytes_total{source=origin} = %v, want %d", v, sent)
	}
}
