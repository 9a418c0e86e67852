//go:build fault && linux

package mesh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
	"github.com/meshcdn/meshcdn/store"
)

// TestFaultSeedDiskFull: a seed whose data directory is on a small real
// filesystem pins one site, then another that does not fit on the disk.
// Pinning the second fails with store.ErrDiskFull, the process lives, and
// the seed goes on serving the first site to an app, every byte right,
// every byte from the seed.
func TestFaultSeedDiskFull(t *testing.T) {
	mnt := testutil.MountTmpfs(t, store.DiskMargin+24<<20)
	sizes := map[string]int64{}
	for i := range 4 {
		sizes[fmt.Sprintf("a/%d.bin", i)] = 2<<20 + int64(i)
	}
	for i := range 10 {
		sizes[fmt.Sprintf("b/%d.bin", i)] = 4<<20 + int64(i)
	}
	s := newSite(t, sizes)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seed := newNode(t, mesh.Config{Name: "full", Role: mesh.RoleSeed, DataDir: filepath.Join(mnt, "seed"), Origin: s.URL()})
	m, err := seed.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	a := subManifest(m, "a/")
	if err := seed.Pin(ctx, a); err != nil {
		t.Fatalf("Pin(a/) = %v", err)
	}
	err = seed.Pin(ctx, subManifest(m, "b/"))
	if !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("Pin(b/) on a full disk = %v, want store.ErrDiskFull", err)
	}
	t.Logf("Pin(b/) = %v", err)
	if h := seed.Store().Health(); !h.DiskFull {
		t.Errorf("seed store health = %+v, want DiskFull", h)
	}

	app := newNode(t, mesh.Config{Name: "full", Origin: s.URL(), Bootstrap: []string{seed.Addrs()[0].String()}, PeerTimeout: 5 * time.Second})
	if err := app.WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	before := s.Sent()
	var size int64
	for _, as := range a.Assets {
		if err := meshtest.WaitProvider(ctx, app, as.Cid); err != nil {
			t.Fatal(err)
		}
		r, _, err := app.OpenAsset(ctx, m, as.Path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, s.Site()[as.Path]) {
			t.Fatalf("fetch %s from the seed on a full disk: %v, or WRONG BYTES", as.Path, err)
		}
		size += as.Size
	}
	if st := app.Stats().Fetch; st.PeerBytes != size || s.Sent() != before {
		t.Errorf("app fetched %d of %d bytes from the seed; the origin sent %d more", st.PeerBytes, size, s.Sent()-before)
	}
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
