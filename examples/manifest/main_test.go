package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
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
		if err := run(context.Background(), options{dir: dir, out: out, seeds: seed}); err != nil {
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
	if err := run(context.Background(), options{dir: dir, out: "bad.json", seeds: "not-an-addr"}); err == nil || !strings.HasPrefix(err.Error(), "-seeds: ") {
		t.Errorf("run(-seeds not-an-addr) = %v, want an error naming -seeds", err)
	}
}

// TestLeavesOut: files under names beginning with a dot (.git, .env) are
// left out but .well-known (listed with -dotfiles), and a DIR that is a
// file or an -o outside DIR is refused before anything is hashed (the
// file was hashed, then the write failed; an absolute -o was joined under
// DIR).
func TestLeavesOut(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"index.html", ".env", ".git/HEAD", ".well-known/security.txt", "img/.hidden.png"} {
		p := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	paths := func(dotfiles bool) string {
		if err := run(context.Background(), options{dir: dir, out: "manifest.json", dotfiles: dotfiles}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := manifest.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		var ps []string
		for _, a := range m.Assets {
			ps = append(ps, a.Path)
		}
		return strings.Join(ps, " ")
	}
	if got, want := paths(false), ".well-known/security.txt index.html"; got != want {
		t.Errorf("listed %q, want %q", got, want)
	}
	if got, want := paths(true), ".env .git/HEAD .well-known/security.txt img/.hidden.png index.html"; got != want {
		t.Errorf("with -dotfiles listed %q, want %q", got, want)
	}
	for _, o := range []options{
		{dir: filepath.Join(dir, "index.html"), out: "manifest.json"},
		{dir: dir, out: filepath.Join(t.TempDir(), "abs.json")},
		{dir: dir, out: "../up.json"},
	} {
		if err := run(context.Background(), o); err == nil {
			t.Errorf("run(%+v) succeeded", o)
		}
	}
}
