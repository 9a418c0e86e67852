//go:build fault && linux

package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/store"
)

// TestFaultSeedDiskFull replays attack 5 of issue 11: badger wrote its
// memory-mapped value log into a full disk and the seed died of SIGBUS. A
// seed whose data directory is on a small real filesystem pins one site,
// then another that does not fit: pinning it fails with store.ErrDiskFull
// and the process lives. Then, while a loop pins the second site again
// every 100 ms (a redeploy retried, refused each time), fresh apps fetch the
// first from it, interleaved with fresh apps fetching it from a seed with
// room (the baseline): every byte right and from the seed, no seed
// penalised, the median within 2x the baseline's, the pins kept, usage
// within quota, the live heap bounded.
func TestFaultSeedDiskFull(t *testing.T) {
	mnt := testutil.MountTmpfs(t, store.DiskMargin+24<<20)
	sizes := map[string]int64{"a/0.bin": nhAssetSize}
	for i := range 10 {
		sizes[fmt.Sprintf("b/%d.bin", i)] = 4<<20 + int64(i)
	}
	s := newSite(t, sizes)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := s.Manifest()
	a, b := subManifest(m, "a/"), subManifest(m, "b/")
	full := &nhBed{site: s, m: a, seed: newNode(t, mesh.Config{Role: mesh.RoleSeed, DataDir: filepath.Join(mnt, "seed"), Origin: s.URL()})}
	roomy := &nhBed{site: s, m: a, seed: newNode(t, mesh.Config{Role: mesh.RoleSeed, DataDir: t.TempDir(), Origin: s.URL()})}
	for _, bed := range []*nhBed{full, roomy} {
		if err := bed.seed.Pin(ctx, a); err != nil {
			t.Fatalf("Pin(a/) = %v", err)
		}
	}
	err := full.seed.Pin(ctx, b)
	if !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("Pin(b/) on a full disk = %v, want store.ErrDiskFull", err)
	}
	t.Logf("Pin(b/) = %v", err)
	if h := full.seed.Store().Health(); !h.DiskFull {
		t.Errorf("seed store health = %+v, want DiskFull", h)
	}

	heap0 := liveHeapMiB()
	var refusals atomic.Int64
	repin := func(ctx context.Context) {
		for ctx.Err() == nil {
			if err := full.seed.Pin(ctx, b); errors.Is(err, store.ErrDiskFull) {
				refusals.Add(1)
			} else if ctx.Err() == nil {
				t.Errorf("Pin(b/) again on a full disk = %v, want store.ErrDiskFull", err)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	before := s.Sent()
	interleaved(t, 5, func(int) time.Duration {
		return roomy.freshTimed(ctx, t, "a/0.bin")
	}, func(int) time.Duration {
		pctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { repin(pctx) })
		defer wg.Wait()
		defer stop()
		return full.freshTimed(ctx, t, "a/0.bin")
	})
	heap1 := liveHeapMiB()
	t.Logf("pins of b/ refused meanwhile: %d; live heap %.0f MiB before the rounds, %.0f after; the origin sent %d bytes meanwhile",
		refusals.Load(), heap0, heap1, s.Sent()-before)
	if refusals.Load() == 0 {
		t.Errorf("no pin was refused during the rounds: the seed's disk was not full while it served")
	}
	if heap1-heap0 > 64 {
		t.Errorf("live heap grew by %.0f MiB, want at most 64", heap1-heap0)
	}
	checkFullSeed(t, full.seed, a)
}

// checkFullSeed fails t if the seed lost a pin of a or is over its quota.
func checkFullSeed(t *testing.T, seed *mesh.Node, a *manifest.Manifest) {
	t.Helper()
	pinned := map[string]bool{}
	for _, r := range seed.Store().Roots() {
		pinned[r.Cid.KeyString()] = r.Pinned
	}
	for _, as := range a.Assets {
		if !pinned[as.Cid.KeyString()] {
			t.Errorf("pin of %s lost", as.Path)
		}
	}
	if u := seed.Store().Usage(); u.Used > u.Quota {
		t.Errorf("seed usage %+v over its quota", u)
	}
}
