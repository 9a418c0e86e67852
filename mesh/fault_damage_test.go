//go:build fault

package mesh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	ipld "github.com/ipfs/go-ipld-format"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
	"github.com/meshcdn/meshcdn/store"
)

// damageSeedCfg is the Config of the seed of TestFaultSeedDamage.
func damageSeedCfg(dir, origin string, log *slog.Logger) mesh.Config {
	return mesh.Config{Name: "damage", Role: mesh.RoleSeed, DataDir: dir, Origin: origin,
		ListenAddrs: mesh.LoopbackAddrs(mesh.RoleSeed), MDNS: mesh.Off, NATPortMap: mesh.Off, Logger: log}
}

// flipInPlace flips one bit at each offset of file, writing in place (no
// truncation: the running seed has the file mapped).
func flipInPlace(t *testing.T, file string, offs ...int64) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	for _, o := range offs {
		if _, err := f.ReadAt(b, o); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x10
		if _, err := f.WriteAt(b, o); err != nil {
			t.Fatal(err)
		}
	}
}

// findFiles returns the files under dir whose names end in suffix.
func findFiles(t *testing.T, dir, suffix string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(p) == suffix {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// damageLeaves flips a byte in the middle of k 1 MiB leaves of m's assets
// in the value logs under dir, found by their bytes, and returns how many
// it hit.
func damageLeaves(t *testing.T, st *store.Store, s *meshtest.Origin, m *manifest.Manifest, dir string, k int) int {
	t.Helper()
	vlogs := findFiles(t, dir, ".vlog")
	if len(vlogs) == 0 {
		t.Fatal("no value log under the seed's directory")
	}
	hit := 0
	for _, a := range m.Assets {
		leaves, err := store.Leaves(context.Background(), st, a.Cid, a.Size)
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range leaves {
			if hit == k || l.Size < 1<<20 || i%2 == 1 {
				continue
			}
			data := s.Site()[a.Path][l.Offset : l.Offset+l.Size]
			for _, v := range vlogs {
				b, err := os.ReadFile(v)
				if err != nil {
					t.Fatal(err)
				}
				if at := bytes.Index(b, data[:256]); at >= 0 {
					flipInPlace(t, v, int64(at)+l.Size/2)
					hit++
					break
				}
			}
		}
	}
	return hit
}

// fetchEvery reads every asset of m on app and checks its bytes; it returns
// the app's fetch totals.
func fetchEvery(ctx context.Context, t *testing.T, app *mesh.Node, s *meshtest.Origin, m *manifest.Manifest) fetch.Totals {
	t.Helper()
	for _, a := range m.Assets {
		r, _, err := app.OpenAsset(ctx, m, a.Path)
		if err != nil {
			t.Fatalf("%s: %v", a.Path, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("%s: %v", a.Path, err)
		}
		if !bytes.Equal(got, s.Site()[a.Path]) {
			t.Fatalf("%s: WRONG BYTES", a.Path)
		}
	}
	return app.Stats().Fetch
}

// TestFaultSeedDamage replays attack 9 of issue 11: damage was all or
// nothing (10 flipped bytes in a value log dropped three pinned assets with
// their good blocks; flips in tables lost pins or stopped the node). Bytes
// are flipped in the value log of a running seed, two 1 MiB leaves of an
// asset at a time, and fresh apps fetch each asset just before its damage
// (the baseline) and just after. While running, the seed serves no damaged
// block (the apps count no bad block and do not penalise it): each damaged
// leaf fails badger's checksum, is dropped as store.CorruptError (logged
// "corrupt block dropped") and the app takes it from the origin; the median
// fetch after damage is within 2x the median before. Then, the seed
// stopped, five bytes are flipped in every table file before it starts
// again. Restarted, the seed starts (salvaging what verifies), keeps its
// pins, every block it holds verifies, pinning the site again takes from
// the origin at most the leaves lost (not whole assets), and a new app
// fetching from peers only gets every byte from the seed.
func TestFaultSeedDamage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sizes := map[string]int64{}
	for i := range 5 {
		sizes[fmt.Sprintf("d/%d.bin", i)] = 8<<20 + int64(i)*1000
	}
	s := newSite(t, sizes)
	dir := t.TempDir()
	corrupt := &msgCounter{msg: "corrupt block dropped", by: map[string]int{}}
	seed, err := mesh.New(ctx, damageSeedCfg(dir, s.URL(), slog.New(corrupt)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { seed.Close() }()
	m, err := seed.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Pin(ctx, m); err != nil {
		t.Fatal(err)
	}
	hit := damageRunningSeed(ctx, t, seed, s, m, dir, corrupt)

	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	flipInTables(t, dir)
	before := s.Sent()
	seed, err = mesh.New(ctx, damageSeedCfg(dir, s.URL(), nil))
	if err != nil {
		t.Fatalf("restart with damaged tables: %v", err)
	}
	checkDamagedStore(ctx, t, seed.Store(), s, m)
	if err := seed.Pin(ctx, m); err != nil {
		t.Fatalf("pin again after the damage: %v", err)
	}
	refetched := s.Sent() - before
	t.Logf("restarted: health %+v; pinning again took %d bytes from the origin", seed.Store().Health(), refetched)
	if refetched > int64(hit+2)<<20 {
		t.Errorf("pinning again took %d bytes from the origin: more than the %d leaves lost", refetched, hit)
	}
	if h := seed.Store().Health(); h.MovedAside != "" || h.ReadOnly {
		t.Errorf("store health after the repair = %+v", h)
	}
	checkSeedStore(t, seed.Store(), s, m, assetPaths(m))

	app2 := newNode(t, mesh.Config{Name: "damage", Bootstrap: []string{seed.Addrs()[0].String()}})
	for _, a := range m.Assets {
		waitProvider(ctx, t, app2, a.Cid)
	}
	st2 := fetchEvery(ctx, t, app2, s, m)
	if st2.OriginBytes != 0 || st2.BadBlocks != 0 || st2.PeerBytes != st2.Peers[seed.ID()] {
		t.Errorf("a new app after the repair: %+v; want every byte from the seed", st2)
	}
}

// damageRunningSeed runs TestFaultSeedDamage's rounds on the running seed
// (dir its DataDir, corrupt counting its "corrupt block dropped" logs):
// fresh apps fetch each asset of m before and after two of its leaves are
// damaged in the value log, and it checks that the seed served no damaged
// block, dropped some and served the apps. It returns how many leaves were
// damaged.
func damageRunningSeed(ctx context.Context, t *testing.T, seed *mesh.Node, s *meshtest.Origin, m *manifest.Manifest, dir string, corrupt *msgCounter) int {
	t.Helper()
	heap0 := liveHeapMiB()
	hit := 0
	var st fetch.Totals
	fresh := func(a manifest.Asset) time.Duration {
		d, tot := damageFetch(ctx, t, seed, s, a)
		st.PeerBytes += tot.PeerBytes
		st.OriginBytes += tot.OriginBytes
		st.BadBlocks += tot.BadBlocks
		return d
	}
	interleaved(t, len(m.Assets), func(i int) time.Duration {
		return fresh(m.Assets[i])
	}, func(i int) time.Duration {
		hit += damageLeaves(t, seed.Store(), s, subManifest(m, m.Assets[i].Path), dir, 2)
		return fresh(m.Assets[i])
	})
	dropped := corrupt.total()
	t.Logf("flipped a byte in %d leaves in the running seed's value log; apps: %d bytes from the seed, %d from the origin, %d bad blocks; seed: %d corrupt blocks dropped; live heap %.0f MiB before the rounds, %.0f after",
		hit, st.PeerBytes, st.OriginBytes, st.BadBlocks, dropped, heap0, liveHeapMiB())
	if st.BadBlocks != 0 {
		t.Errorf("the seed served %d damaged blocks", st.BadBlocks)
	}
	if dropped == 0 {
		t.Errorf("the seed dropped no corrupt block: the damage was not read")
	}
	if st.PeerBytes == 0 {
		t.Errorf("the apps took nothing from the seed")
	}
	return hit
}

// flipInTables flips five bytes, spread evenly, in every table file (.sst)
// of the stopped store at dir.
func flipInTables(t *testing.T, dir string) {
	t.Helper()
	for _, sst := range findFiles(t, dir, ".sst") {
		fi, err := os.Stat(sst)
		if err != nil {
			t.Fatal(err)
		}
		var offs []int64
		for i := range int64(5) {
			offs = append(offs, fi.Size()*(2*i+1)/10)
		}
		flipInPlace(t, sst, offs...)
	}
}

// damageFetch starts a new app bootstrapped to seed, with s as its
// origin, waits until it knows the seed holds a, fetches a and checks its
// bytes. It fails t if the app penalises the seed, and returns how long
// the fetch took and the app's totals.
func damageFetch(ctx context.Context, t *testing.T, seed *mesh.Node, s *meshtest.Origin, a manifest.Asset) (time.Duration, fetch.Totals) {
	t.Helper()
	app, err := mesh.New(ctx, meshtest.LocalConfig(mesh.Config{Name: "damage", Bootstrap: []string{seed.Addrs()[0].String()}, Origin: s.URL()}))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	waitProvider(ctx, t, app, a.Cid)
	start := time.Now()
	st := fetchEvery(ctx, t, app, s, &manifest.Manifest{Assets: []manifest.Asset{a}})
	d := time.Since(start)
	if app.Fetcher().Penalised(seed.ID()) {
		t.Errorf("an app penalised the seed fetching %s", a.Path)
	}
	return d, st
}

// checkDamagedStore checks a store reopened on damaged files: every pin
// kept (whole or incomplete), and every leaf either its right bytes or a
// typed error (missing, or store.ErrCorrupt), never wrong bytes.
func checkDamagedStore(ctx context.Context, t *testing.T, st *store.Store, s *meshtest.Origin, m *manifest.Manifest) {
	t.Helper()
	pinned := map[string]bool{}
	for _, r := range append(st.Roots(), st.Incomplete()...) {
		pinned[r.Cid.KeyString()] = r.Pinned
	}
	lost := 0
	for _, a := range m.Assets {
		if !pinned[a.Cid.KeyString()] {
			t.Errorf("pin of %s lost to the damage", a.Path)
			continue
		}
		leaves, err := store.Leaves(ctx, st, a.Cid, a.Size)
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) && !ipld.IsNotFound(err) {
				t.Errorf("%s: leaves: untyped error %v", a.Path, err)
			}
			t.Logf("%s: its DAG lost to the damage: %v", a.Path, err)
			continue
		}
		for _, l := range leaves {
			b, err := st.Get(ctx, l.Cid)
			var ce *store.CorruptError
			switch {
			case err == nil && !bytes.Equal(b.RawData(), s.Site()[a.Path][l.Offset:l.Offset+l.Size]):
				t.Fatalf("%s: leaf at %d read back WRONG BYTES", a.Path, l.Offset)
			case err != nil && !errors.As(err, &ce) && !ipld.IsNotFound(err):
				t.Errorf("%s: leaf at %d: untyped error %v", a.Path, l.Offset, err)
			case err != nil:
				lost++
			}
		}
	}
	t.Logf("reopened on damaged tables: %d leaves lost, health %+v", lost, st.Health())
}
