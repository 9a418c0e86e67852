package fetch_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// BenchmarkPeerHit (issue 13, must-show 9): time to first byte of a
// 100 KiB asset from a connected peer known (Config.Providers) to hold it,
// beside a plain http.Get of the same bytes from an origin, both on
// loopback. Each iteration makes MESHCDN_BENCH_RUNS (default 50)
// interleaved pairs of runs with one client node, the asset deleted from its
// store after each fetch; it reports the medians over all runs and their
// ratio (target: the peer hit at most 3 ms), how many runs were not
// served by the peer (the origin joins after Config.PeerTimeout) and the
// duplicate copies of the asset received per run.
//
// In "idle" the runs are 30 ms apart, so each fetch starts with bitswap's
// per-peer message queues idle (a fresh app); in "busy" they follow one
// another at once (an app fetching assets one after another, whose previous
// fetch's cancels went to the same peer a moment ago).
//
//	go test -run '^$' -bench PeerHit ./fetch
func BenchmarkPeerHit(b *testing.B) {
	for _, c := range []struct {
		name string
		gap  time.Duration
	}{{"idle", 30 * time.Millisecond}, {"busy", 0}} {
		b.Run(c.name, func(b *testing.B) { benchPeerHit(b, c.gap) })
	}
}

func benchPeerHit(b *testing.B, gap time.Duration) {
	runs := envInt("MESHCDN_BENCH_RUNS", 50)
	a := makeAsset(b, 52, 100<<10)
	o := newOrigin(b, a.data)
	seed := newNode(b, fetch.Config{})
	seed.hold(b, a)
	st := newStore(b, -1)
	cl := newNode(b, fetch.Config{Store: st, Providers: providers{a.t.Cid: {seed.info()}}})
	ctx := context.Background()
	if err := cl.h.Connect(ctx, seed.info()); err != nil {
		b.Fatal(err)
	}
	leaves, err := store.Leaves(ctx, nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		b.Fatal(err)
	}
	tg := a.t
	tg.URL = o.URL // as an app has it; peers get Config.PeerTimeout first
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	one := make([]byte, 1)
	time.Sleep(100 * time.Millisecond) // identify and bitswap's connection event settle
	b.ResetTimer()
	var plain, ours []time.Duration
	misses := 0
	for range b.N {
		for range runs {
			time.Sleep(gap)
			start := time.Now()
			resp, err := hc.Get(o.URL)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, one); err != nil {
				b.Fatal(err)
			}
			plain = append(plain, time.Since(start))
			resp.Body.Close()

			time.Sleep(gap)
			start = time.Now()
			r, err := cl.f.Open(ctx, tg)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(r, one); err != nil {
				b.Fatal(err)
			}
			ours = append(ours, time.Since(start))
			s := r.Stats()
			r.Close()
			if s.PeerBytes == 0 || s.OriginBytes != 0 {
				misses++ // counted in the median all the same
			}
			st.Remove(ctx, a.t.Cid) // cold again
			for _, l := range leaves {
				st.DeleteBlock(ctx, l.Cid)
			}
		}
	}
	mp, mo := median(plain), median(ours)
	b.ReportMetric(float64(mp.Microseconds())/1000, "http-ttfb-ms")
	b.ReportMetric(float64(mo.Microseconds())/1000, "peer-ttfb-ms")
	b.ReportMetric(float64(mo)/float64(mp), "ratio")
	b.ReportMetric(float64(misses), "not-peer-hits")
	dup := float64(cl.f.Stats().DuplicateBytes) / float64(len(ours)) / float64(len(a.data))
	b.ReportMetric(dup, "dup-copies/run")
	b.Logf("median TTFB over %d runs: http.Get %v, peer hit %v, ratio %.1f; %d runs not a peer hit, %.3f duplicate copies per run",
		len(ours), mp, mo, float64(mo)/float64(mp), misses, dup)
}
