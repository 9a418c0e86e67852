package mesh_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
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
