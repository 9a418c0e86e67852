//go:build fault

package mesh_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
)

// gatewayAbuse is attack 8 of issue 11 against the gateway at gw: k
// clients that ask for path and stop reading, and a client that asks for
// path in 20,000 one-byte ranges over and over, reading each answer at
// attackReadRate. stop ends it and waits.
type gatewayAbuse struct {
	stop    func()
	answers atomic.Int64 // many-range requests answered with the whole file
}

// attackReadRate is the bandwidth of the many-range client, in bytes per
// second (128 Mbit/s). What the attack is about is the CPU one small
// request costs the seed, not its bandwidth: a client in this process
// reading at whatever rate the CPU allows took, under -race, as much of
// a two-core machine as the seed it attacked, and slowed the honest
// fetch past 2x by itself (2.56x in one CI run). The defence (the whole
// file for too many ranges) is checked by the answers' size, not by time.
const attackReadRate = 16 << 20

// pacedGets asks url over and over, with the Range header rng if not
// empty, reading each answer at attackReadRate, and counts in whole the
// answers that are the whole content of size bytes. It returns what stops
// it and waits.
func pacedGets(ctx context.Context, url, rng string, size int64, whole *atomic.Int64) (stop func()) {
	actx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for actx.Err() == nil {
			req, _ := http.NewRequestWithContext(actx, "GET", url, nil)
			if rng != "" {
				req.Header.Set("Range", rng)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				continue
			}
			if resp.StatusCode == http.StatusOK && resp.ContentLength == size {
				whole.Add(1)
			}
			pacedDiscard(actx, resp.Body, attackReadRate)
			resp.Body.Close()
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// pacedDiscard reads r to its end, or to an error or ctx's end, at no
// more than rate bytes a second.
func pacedDiscard(ctx context.Context, r io.Reader, rate int64) {
	start := time.Now()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err != nil {
			return
		}
		ahead := time.Duration(n*int64(time.Second)/rate) - time.Since(start)
		if ahead <= 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(ahead):
		}
	}
}

func startGatewayAbuse(ctx context.Context, t *testing.T, gw *httptest.Server, n *mesh.Node, path string, size int64, k int) *gatewayAbuse {
	t.Helper()
	ga := &gatewayAbuse{}
	fetches := n.Stats().Fetch.Fetches
	var conns []net.Conn
	for range k {
		conns = append(conns, stalledGet(t, gw.Listener.Addr().String(), path))
	}
	waitFor(ctx, t, "the stalled requests to start", func() bool { return n.Stats().Fetch.Fetches >= fetches+int64(k) })
	var specs []string
	for i := range 20000 {
		off := size - 1 - int64(i)*(size/20000)
		specs = append(specs, fmt.Sprintf("%d-%d", off, off))
	}
	stopGets := pacedGets(ctx, gw.URL+path, "bytes="+strings.Join(specs, ","), size, &ga.answers)
	ga.stop = func() {
		stopGets()
		for _, c := range conns {
			c.Close()
		}
	}
	return ga
}

// TestFaultGatewayAbuse replays attack 8 of issue 11 against a seed's
// gateway: 20,000 one-byte ranges in one request cost 7 s and 11 CPU-s
// (each range re-read and re-hashed its leaf) against 53 ms for the whole
// file, and 60 stalled readers held 940 MiB of heap with no write timeout.
// Now more ranges than MaxRanges get the whole file, read once, and a
// request whose client stops reading parks its fetch, within MaxBuffer.
// In rounds, the honest app beside the seed fetches an asset from it by
// bitswap and a local client GETs the asset through the gateway, once
// without the attack and once with 60 stalled readers and a client
// repeating the many-range request (reading at attackReadRate): each
// median under attack is within 2x its baseline (the gateway's request:
// plus the wait for its buffer that stalled readers cost by design), the
// live heap stays bounded, every byte is right, and the app does not
// penalise the seed.
func TestFaultGatewayAbuse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := newBed(t, 1, nil)
	gw := httptest.NewServer(b.seed.Gateway(mesh.GatewayConfig{Manifest: b.m}))
	t.Cleanup(gw.Close)
	const path, stalled = "/a0.bin", 60
	heap0 := liveHeapMiB()
	var heapPeak float64
	var answers int64
	under := func(honest func() time.Duration) func(int) time.Duration {
		return func(int) time.Duration {
			ga := startGatewayAbuse(ctx, t, gw, b.seed, path, nhAssetSize, stalled)
			d := honest()
			heapPeak = max(heapPeak, liveHeapMiB())
			ga.stop()
			answers += ga.answers.Load()
			return d
		}
	}
	// The baseline carries the same read load without the attack: a
	// client reading the whole file over and over at attackReadRate. On a
	// two-core machine under -race, reading as much beside it costs the
	// honest fetch about as much CPU as the fetch itself, and a bound of
	// twice a bare baseline was met by the margin of the noise (2.05x,
	// 2.47x locally, 2.31x in one CI run, before and after unrelated
	// changes); against this baseline the ratio is what the many-range
	// requests and the stalled readers cost beyond their bytes.
	var plainWhole atomic.Int64
	loaded := func(honest func() time.Duration) func(int) time.Duration {
		return func(int) time.Duration {
			stop := pacedGets(ctx, gw.URL+path, "", nhAssetSize, &plainWhole)
			defer stop()
			return honest()
		}
	}
	fetchApp := func() time.Duration { return b.freshTimed(ctx, t, "a0.bin") }
	getGateway := func() time.Duration {
		start := time.Now()
		if _, body, err := gatewayGet(t, ctx, gw.URL+path, nil); err != nil || !bytes.Equal(body, b.site.Site()["a0.bin"]) {
			t.Fatalf("honest GET through the gateway: %v, %d bytes, or WRONG BYTES", err, len(body))
		}
		return time.Since(start)
	}
	t.Run("app", func(t *testing.T) {
		interleaved(t, 5, loaded(fetchApp), under(fetchApp))
	})
	t.Run("gateway", func(t *testing.T) {
		// The honest request's fetch waits for MaxBuffer while the stalled
		// readers' fetches hold it, until their blocked writes are parked:
		// up to mesh.GatewayParkCheck (see GatewayConfig.MaxBuffer). On a
		// fast machine without -race that alone is twice the baseline.
		interleavedPlus(t, 5, mesh.GatewayParkCheck, loaded(getGateway), under(getGateway))
	})
	t.Logf("many-range requests answered whole meanwhile: %d; live heap %.0f MiB before, at most %.0f under attack", answers, heap0, heapPeak)
	if answers == 0 {
		t.Errorf("no many-range request was answered during the rounds")
	}
	if heapPeak-heap0 > 128 {
		t.Errorf("live heap grew by %.0f MiB under attack, want at most 128", heapPeak-heap0)
	}
}
