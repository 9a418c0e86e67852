package manifest_test

import (
	"fmt"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
)

// TestLookupOnLiteralConcurrently: Lookup on a Manifest built as a literal
// (its fields are exported) from several goroutines at once, as a gateway
// serving it does, is safe (run with -race): it used to build its index
// on first use, a map written by every caller that came first.
func TestLookupOnLiteralConcurrently(t *testing.T) {
	m := &manifest.Manifest{Version: manifest.Version, Profile: manifest.Profile}
	for i := range 100 {
		m.Assets = append(m.Assets, manifest.Asset{Path: fmt.Sprintf("a/%d.txt", i), Size: int64(i)})
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				p := fmt.Sprintf("/a/%d.txt", (i+g)%100)
				if a, ok := m.Lookup(p); !ok || a.Path != p[1:] {
					t.Errorf("Lookup(%q) = %v, %v", p, a.Path, ok)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestLookupAfterAssetsChange: Lookup on a parsed Manifest whose Assets
// the caller cut or reordered returns what Assets hold now, never an
// asset of another path, and does not panic; a nil Manifest lists nothing.
func TestLookupAfterAssetsChange(t *testing.T) {
	src := &manifest.Manifest{Version: manifest.Version, Profile: manifest.Profile}
	for i := range 3 {
		b := blocks.NewBlock(testutil.Bytes(uint64(i), int64(i+1)))
		src.Assets = append(src.Assets, manifest.Asset{Path: fmt.Sprintf("%d.txt", i), Size: int64(i + 1), Cid: cid.NewCidV1(cid.Raw, b.Cid().Hash()), Type: "text/plain"})
	}
	data, err := src.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	m.Assets[0], m.Assets[2] = m.Assets[2], m.Assets[0]
	if a, ok := m.Lookup("2.txt"); !ok || a.Path != "2.txt" {
		t.Errorf("Lookup(2.txt) after a swap = %q, %v", a.Path, ok)
	}
	m.Assets = m.Assets[:1]
	if a, ok := m.Lookup("1.txt"); ok {
		t.Errorf("Lookup(1.txt) after Assets were cut = %q, want not found", a.Path)
	}
	var none *manifest.Manifest
	if _, ok := none.Lookup("0.txt"); ok {
		t.Error("Lookup on a nil Manifest found an asset")
	}
}
