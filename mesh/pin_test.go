package mesh_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// TestPinEmptyFile: a site with an empty file pins whole. The empty file is
// one empty raw block with nothing to fetch; Pin used to fail with "content
// incomplete" because no fetch stored that block.
func TestPinEmptyFile(t *testing.T) {
	s := newSite(t, map[string]int64{"empty.txt": 0, "a.js": 1000})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, Origin: s.URL()})
	if err := seed.Pin(ctx, s.Manifest()); err != nil {
		t.Fatalf("Pin(site with an empty file) = %v, want nil", err)
	}
	for _, a := range s.Manifest().Assets {
		if !seed.Store().Holds(a.Cid) {
			t.Errorf("after Pin the store does not hold %s (%d bytes)", a.Path, a.Size)
		}
	}
	var pinned int
	for _, r := range seed.Store().Roots() {
		if r.Pinned {
			pinned++
		}
	}
	if pinned != len(s.Manifest().Assets) {
		t.Errorf("%d roots pinned, want %d", pinned, len(s.Manifest().Assets))
	}
}

// TestNilManifest: OpenAsset and Pin given a nil manifest fail with an
// error, never a panic: OpenAsset finds no path in it (ErrNotInManifest).
func TestNilManifest(t *testing.T) {
	n := newNode(t, mesh.Config{})
	ctx := context.Background()
	if r, _, err := n.OpenAsset(ctx, nil, "index.html"); !errors.Is(err, mesh.ErrNotInManifest) {
		if r != nil {
			r.Close()
		}
		t.Errorf("OpenAsset(nil manifest) = %v, want ErrNotInManifest", err)
	}
	if err := n.Pin(ctx, nil); err == nil {
		t.Error("Pin(nil manifest) succeeded")
	}
}

// TestPinBesideFetches pins a 2 MiB asset, again and again, in a 5 MiB
// store that other fetches keep filling: the pin fits beside them, and
// must not fail. Before, the pin's leaves were loose blocks until the
// fetch ended, evicted (oldest first) to make room for the others' leaves,
// and Pin failed with store.ErrIncomplete in 9 runs of 10 (found by an
// audit of the API under concurrent use).
func TestPinBesideFetches(t *testing.T) {
	sizes := map[string]int64{"p.bin": 2 << 20, "x.bin": 2 << 20, "y.bin": 2<<20 + 1, "z.bin": 2<<20 + 2}
	s := newSite(t, sizes)
	n := newNode(t, mesh.Config{Origin: s.URL(), Quota: 5 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m := s.Manifest()
	pa, _ := m.Lookup("p.bin")
	pm := *m
	pm.Assets = []manifest.Asset{pa}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range []string{"x.bin", "y.bin", "z.bin"} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, _, err := n.OpenAsset(ctx, m, p)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, r)
				r.Close()
			}
		})
	}
	defer wg.Wait()
	defer close(stop)
	for i := range 10 {
		if err := n.Pin(ctx, &pm); err != nil {
			t.Fatalf("pin %d of a 2 MiB asset in a 5 MiB store, nothing else pinned: %v", i, err)
		}
		if err := n.Store().Unpin(ctx, pa.Cid); err != nil {
			t.Fatal(err)
		}
		if err := n.Store().Remove(ctx, pa.Cid); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSitePinnedCountsThePinOnly: a SitePinned event's Fetched and
// OriginBytes are the bytes the pin fetched, not those of other fetches
// of the node that ran meanwhile (before, the node's totals over the pin:
// 11 MiB for a 3 MiB site beside an 8 MiB read).
func TestSitePinnedCountsThePinOnly(t *testing.T) {
	const size = 3 << 20
	site := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: meshtest.GenerateSite(51, map[string]int64{"a.bin": size}), BytesPerSecond: 1 << 20})
	other := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: meshtest.GenerateSite(52, map[string]int64{"x.bin": 8 << 20})})
	n := newNode(t, mesh.Config{Origin: site.URL()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	events := make(chan mesh.SiteEvent, 16)
	f, err := n.Follow(mesh.FollowConfig{URL: "manifest.json", Pin: mesh.On, OnEvent: func(ev mesh.SiteEvent) { events <- ev }})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	waitEvent(ctx, t, events, mesh.SiteUpdated)
	// The pin takes about 3 s at the origin's 1 MiB/s; the 8 MiB read,
	// from another origin at loopback speed, ends well inside it.
	tg, err := fetch.AssetTarget(other.Manifest().Assets[0], other.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := n.Fetcher().Open(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	ev := waitEvent(ctx, t, events, mesh.SitePinned)
	if ev.Fetched != size || ev.OriginBytes != size {
		t.Errorf("SitePinned: Fetched %d, OriginBytes %d; want the site's %d each", ev.Fetched, ev.OriginBytes, size)
	}
}
