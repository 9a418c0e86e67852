package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshcdn/meshcdn/manifest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNeverListsItself builds a site's manifest three times, once under
// another name: no build lists its own output or an earlier manifest.
func TestNeverListsItself(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<p>hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(`{"profile":"unixfs-v1-2025"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	const seed = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	for _, out := range []string{"manifest.json", "manifest.json", "v2.json"} {
		if err := run(context.Background(), dir, out, seed); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, out))
		if err != nil {
			t.Fatal(err)
		}
		m, err := manifest.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, a := range m.Assets {
			paths = append(paths, a.Path)
		}
		// data.json merely mentions the profile: it is an asset.
		if len(paths) != 2 || paths[0] != "data.json" || paths[1] != "index.html" {
			t.Errorf("manifest %s lists %v, want [data.json index.html]", out, paths)
		}
		if len(m.Seeds) != 1 || m.Seeds[0] != seed {
			t.Errorf("manifest %s seeds = %v", out, m.Seeds)
		}
	}
	if err := run(context.Background(), dir, "bad.json", "not-an-addr"); err == nil {
		t.Error("run(-seeds not-an-addr) succeeded")
	}
}
