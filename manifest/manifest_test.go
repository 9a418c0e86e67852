package manifest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"go.uber.org/goleak"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestFromReaderMatchesKubo checks every Kubo vector, the 1 GiB + 1 MiB one
// included (two layers of inner nodes), and that the inner nodes a manifest
// carries give back the leaves' byte ranges.
func TestFromReaderMatchesKubo(t *testing.T) {
	for _, v := range testutil.KuboVectors {
		if testing.Short() && v.Size > 64<<20 {
			continue
		}
		t.Run(fmt.Sprint(v.Size), func(t *testing.T) {
			a, err := manifest.FromReader(context.Background(), testutil.Reader(testutil.KuboSeed, v.Size))
			if err != nil {
				t.Fatal(err)
			}
			if a.Cid.String() != v.Cid || a.Size != v.Size {
				t.Fatalf("FromReader(%d bytes) = %s, %d; Kubo gives %s", v.Size, a.Cid, a.Size, v.Cid)
			}
			leaves, err := a.Leaves(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			wantLeaves := (v.Size + (1 << 20) - 1) >> 20
			if v.Size == 0 {
				wantLeaves = 1
			}
			if int64(len(leaves)) != wantLeaves {
				t.Errorf("%d leaves, want %d", len(leaves), wantLeaves)
			}
			for i, l := range leaves {
				if l.Offset != int64(i)<<20 {
					t.Fatalf("leaf %d at offset %d", i, l.Offset)
				}
			}
			if v.Size > 1<<30 && len(a.Nodes) != 3 {
				t.Errorf("a 1025-leaf file has %d inner nodes, want 3 (root and two children)", len(a.Nodes))
			}
		})
	}
}

func writeDir(t *testing.T) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	want := map[string]string{}
	for i, v := range testutil.KuboVectors {
		if v.Size > 16<<20 {
			continue
		}
		name := filepath.Join(dir, fmt.Sprintf("d%d", i%2), fmt.Sprintf("f%d.bin", v.Size))
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, testutil.Bytes(testutil.KuboSeed, v.Size), 0o644); err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprintf("d%d/f%d.bin", i%2, v.Size)] = v.Cid
	}
	return dir, want
}

func TestFromDirRoundTrip(t *testing.T) {
	dir, want := writeDir(t)
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><p>hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	m, err := manifest.FromDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	for p, c := range want {
		a, ok := m.Lookup(p)
		if !ok || a.Cid.String() != c {
			t.Errorf("Lookup(%q) = %v, %v; want %s", p, a.Cid, ok, c)
		}
	}
	if a, ok := m.Lookup("/index.html"); !ok || a.Type != "text/html; charset=utf-8" {
		t.Errorf("Lookup(/index.html) = %+v, %v", a, ok)
	}
	if _, ok := m.Lookup("link"); ok {
		t.Error("a symlink made it into the manifest")
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := manifest.Parse(data)
	if err != nil {
		t.Fatalf("Parse(Marshal()) = %v", err)
	}
	if len(m2.Assets) != len(m.Assets) {
		t.Fatalf("round trip: %d assets, want %d", len(m2.Assets), len(m.Assets))
	}
	for i := range m.Assets {
		a, b := m.Assets[i], m2.Assets[i]
		if a.Path != b.Path || !a.Cid.Equals(b.Cid) || a.Size != b.Size || a.Type != b.Type || len(a.Nodes) != len(b.Nodes) {
			t.Errorf("round trip asset %d: %+v != %+v", i, b, a)
		}
	}
}

// valid is a small valid manifest as a generic JSON tree, for the bad-input
// table to break one piece at a time.
func valid(t *testing.T) map[string]any {
	t.Helper()
	a, err := manifest.FromReader(context.Background(), testutil.Reader(1, 2<<20+1))
	if err != nil {
		t.Fatal(err)
	}
	a.Path, a.Type = "big.bin", "application/octet-stream"
	small, err := manifest.FromReader(context.Background(), testutil.Reader(2, 10))
	if err != nil {
		t.Fatal(err)
	}
	small.Path, small.Type = "small.txt", "text/plain"
	data, err := (&manifest.Manifest{Assets: []manifest.Asset{a, small}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseRejects(t *testing.T) {
	asset := func(v map[string]any, i int) map[string]any { return v["assets"].([]any)[i].(map[string]any) }
	otherNode := func(t *testing.T) string {
		a, err := manifest.FromReader(context.Background(), testutil.Reader(99, 3<<20))
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(a.Nodes[0].RawData())
	}
	tests := []struct {
		name    string
		edit    func(t *testing.T, v map[string]any)
		raw     string
		wantErr error
	}{
		{name: "unknown version", edit: func(t *testing.T, v map[string]any) { v["version"] = 2 }, wantErr: manifest.ErrUnsupportedVersion},
		{name: "no version", edit: func(t *testing.T, v map[string]any) { delete(v, "version") }, wantErr: manifest.ErrInvalid},
		{name: "wrong profile", edit: func(t *testing.T, v map[string]any) { v["profile"] = "kubo-legacy" }, wantErr: manifest.ErrInvalid},
		{name: "unknown field", edit: func(t *testing.T, v map[string]any) { v["extra"] = true }, wantErr: manifest.ErrInvalid},
		{name: "bad cid", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["cid"] = "bafkqnotacid" }, wantErr: manifest.ErrInvalid},
		{name: "truncated digest", edit: func(t *testing.T, v map[string]any) {
			// A 4-byte sha2-256 digest: go-multihash would check bytes
			// against it by truncating their hash, forgeable in 2^32 tries.
			h, err := mh.Sum([]byte("a small asset"), mh.SHA2_256, 4)
			if err != nil {
				t.Fatal(err)
			}
			asset(v, 1)["cid"] = cid.NewCidV1(cid.Raw, h).String()
		}, wantErr: manifest.ErrInvalid},
		{name: "cidv0", edit: func(t *testing.T, v map[string]any) {
			asset(v, 1)["cid"] = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
		}, wantErr: manifest.ErrInvalid},
		{name: "negative size", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["size"] = -1 }, wantErr: manifest.ErrInvalid},
		{name: "no size", edit: func(t *testing.T, v map[string]any) { delete(asset(v, 1), "size") }, wantErr: manifest.ErrInvalid},
		{name: "raw asset too big", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["size"] = 2 << 20 }, wantErr: manifest.ErrInvalid},
		{name: "dotdot path", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["path"] = "../x" }, wantErr: manifest.ErrInvalid},
		{name: "inner dotdot", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["path"] = "a/../../x" }, wantErr: manifest.ErrInvalid},
		{name: "absolute path", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["path"] = "/etc/passwd" }, wantErr: manifest.ErrInvalid},
		{name: "backslash", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["path"] = `..\x` }, wantErr: manifest.ErrInvalid},
		{name: "empty segment", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["path"] = "a//b" }, wantErr: manifest.ErrInvalid},
		{name: "control char", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["path"] = "a\x00b" }, wantErr: manifest.ErrInvalid},
		{name: "duplicate path", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["path"] = "big.bin" }, wantErr: manifest.ErrInvalid},
		{name: "bad type", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["type"] = "text/;;" }, wantErr: manifest.ErrInvalid},
		{name: "no nodes", edit: func(t *testing.T, v map[string]any) { delete(asset(v, 0), "nodes") }, wantErr: manifest.ErrInvalid},
		{name: "node of another file", edit: func(t *testing.T, v map[string]any) { asset(v, 0)["nodes"] = []any{otherNode(t)} }, wantErr: manifest.ErrInvalid},
		{name: "extra node", edit: func(t *testing.T, v map[string]any) {
			asset(v, 0)["nodes"] = append(asset(v, 0)["nodes"].([]any), otherNode(t))
		}, wantErr: manifest.ErrInvalid},
		{name: "size disagrees with nodes", edit: func(t *testing.T, v map[string]any) { asset(v, 0)["size"] = 2<<20 + 2 }, wantErr: manifest.ErrInvalid},
		{name: "bad base64", edit: func(t *testing.T, v map[string]any) { asset(v, 0)["nodes"] = []any{"!!!"} }, wantErr: manifest.ErrInvalid},
		{name: "nodes on raw", edit: func(t *testing.T, v map[string]any) { asset(v, 1)["nodes"] = []any{otherNode(t)} }, wantErr: manifest.ErrInvalid},
		{name: "not json", raw: "{\"version\":1,", wantErr: manifest.ErrInvalid},
		{name: "trailing data", raw: "{\"version\":1,\"profile\":\"unixfs-v1-2025\",\"assets\":[]} {}", wantErr: manifest.ErrInvalid},
		{name: "array", raw: "[]", wantErr: manifest.ErrInvalid},
		// encoding/json matched names whatever their case, and kept the
		// last of two; a browser's reader does neither.
		{name: "field in another case", edit: func(t *testing.T, v map[string]any) {
			a := asset(v, 1)
			a["Path"] = a["path"]
			delete(a, "path")
		}, wantErr: manifest.ErrInvalid},
		{name: "top field in another case", edit: func(t *testing.T, v map[string]any) {
			v["Profile"] = v["profile"]
			delete(v, "profile")
		}, wantErr: manifest.ErrInvalid},
		{name: "field twice", raw: `{"version":1,"profile":"unixfs-v1-2025","assets":[{"path":"a.js","path":"b.js","cid":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","size":0,"type":"text/plain"}]}`, wantErr: manifest.ErrInvalid},
		{name: "not utf-8", raw: "{\"version\":1,\"profile\":\"unixfs-v1-2025\",\"assets\":[{\"path\":\"a\xffb\",\"cid\":\"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku\",\"size\":0,\"type\":\"text/plain\"}]}", wantErr: manifest.ErrInvalid},
		{name: "empty node", edit: func(t *testing.T, v map[string]any) { asset(v, 0)["nodes"] = []any{""} }, wantErr: manifest.ErrInvalid},
		{name: "too many seeds", edit: func(t *testing.T, v map[string]any) {
			seeds := make([]any, manifest.MaxSeeds+1)
			for i := range seeds {
				seeds[i] = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLRPJAA5o6vKPUMSfoDtEsRHYEtQQGWUrbDJJuimXTGcJ"
			}
			v["seeds"] = seeds
		}, wantErr: manifest.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.raw)
			if tc.edit != nil {
				v := valid(t)
				tc.edit(t, v)
				var err error
				if data, err = json.Marshal(v); err != nil {
					t.Fatal(err)
				}
			}
			m, err := manifest.Parse(data)
			if !errors.Is(err, tc.wantErr) || m != nil {
				t.Errorf("Parse = %v, %v; want %v", m, err, tc.wantErr)
			}
		})
	}
	// The untouched manifest parses.
	data, _ := json.Marshal(valid(t))
	if _, err := manifest.Parse(data); err != nil {
		t.Errorf("Parse(valid) = %v", err)
	}
}

func TestReadLimit(t *testing.T) {
	big := strings.NewReader(`{"version":1,"profile":"unixfs-v1-2025","assets":[` + strings.Repeat(" ", manifest.MaxSize) + `]}`)
	if _, err := manifest.Read(big); !errors.Is(err, manifest.ErrInvalid) {
		t.Errorf("Read(oversized) = %v, want ErrInvalid", err)
	}
}

// TestFromDirExcludes checks that the paths given to FromDir are left out:
// a manifest written into its directory never lists itself.
func TestFromDirExcludes(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"index.html", "manifest.json", "sub/old.json"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := manifest.FromDir(context.Background(), dir, "manifest.json", "/sub/old.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Assets) != 1 || m.Assets[0].Path != "index.html" {
		t.Errorf("FromDir(excluding manifest.json, sub/old.json) lists %+v, want only index.html", m.Assets)
	}
}

// TestSeeds checks the optional seeds field: it round-trips, a manifest
// without it is the manifest of before (no "seeds" key), and malformed
// entries are refused.
func TestSeeds(t *testing.T) {
	const seed = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	old := []byte(`{"version":1,"profile":"unixfs-v1-2025","assets":[]}`)
	m, err := manifest.Parse(old)
	if err != nil || len(m.Seeds) != 0 {
		t.Fatalf("Parse(manifest without seeds) = %v, %v", m, err)
	}
	out, _ := m.Marshal()
	if strings.Contains(string(out), "seeds") {
		t.Errorf("Marshal without seeds wrote %s", out)
	}
	m.Seeds = []string{seed}
	out, err = m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := manifest.Parse(out)
	if err != nil || len(m2.Seeds) != 1 || m2.Seeds[0] != seed {
		t.Fatalf("Parse(Marshal(seeds)) = %v, %v", m2, err)
	}
	for _, bad := range []string{
		`"not-a-multiaddr"`, `"/ip4/127.0.0.1/tcp/4001"`, `""`, `"/ip4/1.2.3.4/tcp/1/p2p/x y"`, `1`,
		`"/p2p/` + strings.Repeat("a", manifest.MaxSeedLen) + `"`,
	} {
		data := []byte(`{"version":1,"profile":"unixfs-v1-2025","assets":[],"seeds":[` + bad + `]}`)
		if _, err := manifest.Parse(data); !errors.Is(err, manifest.ErrInvalid) {
			t.Errorf("Parse(seeds [%s]) = %v, want ErrInvalid", bad, err)
		}
	}
	many := `"` + seed + `"` + strings.Repeat(`,"`+seed+`"`, manifest.MaxSeeds)
	if _, err := manifest.Parse([]byte(`{"version":1,"profile":"unixfs-v1-2025","assets":[],"seeds":[` + many + `]}`)); !errors.Is(err, manifest.ErrInvalid) {
		t.Errorf("Parse(%d seeds) = %v, want ErrInvalid", manifest.MaxSeeds+1, err)
	}
}

// TestMarshalRefusesWhatReadRefuses: a manifest built in code that Read
// would refuse fails Marshal with ErrInvalid. Before, Marshal wrote it and
// every node then failed to load the deployed manifest.
func TestMarshalRefusesWhatReadRefuses(t *testing.T) {
	ctx := context.Background()
	big, err := manifest.FromReader(ctx, testutil.Reader(3, 2<<20+1))
	if err != nil {
		t.Fatal(err)
	}
	big.Path, big.Type = "big.bin", "application/octet-stream"
	small, err := manifest.FromReader(ctx, testutil.Reader(4, 10))
	if err != nil {
		t.Fatal(err)
	}
	small.Path, small.Type = "small.txt", "text/plain"
	for _, tc := range []struct {
		name string
		edit func(m *manifest.Manifest)
	}{
		{"unsafe path", func(m *manifest.Manifest) { m.Assets[1].Path = "../etc/passwd" }},
		{"empty path", func(m *manifest.Manifest) { m.Assets[1].Path = "" }},
		{"duplicate path", func(m *manifest.Manifest) { m.Assets[1].Path = m.Assets[0].Path }},
		{"no type", func(m *manifest.Manifest) { m.Assets[1].Type = "" }},
		{"size the nodes do not add up to", func(m *manifest.Manifest) { m.Assets[0].Size++ }},
		{"raw leaf over a chunk", func(m *manifest.Manifest) { m.Assets[1].Size = 2 << 20 }},
		{"no nodes for a dag-pb root", func(m *manifest.Manifest) { m.Assets[0].Nodes = nil }},
		{"undefined CID", func(m *manifest.Manifest) { m.Assets[1].Cid = cid.Undef }},
		{"seed without /p2p/", func(m *manifest.Manifest) { m.Seeds = []string{"/ip4/127.0.0.1/tcp/4001"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &manifest.Manifest{Assets: []manifest.Asset{big, small}}
			tc.edit(m)
			if data, err := m.Marshal(); !errors.Is(err, manifest.ErrInvalid) {
				t.Errorf("Marshal = %d bytes, %v; want ErrInvalid", len(data), err)
			}
		})
	}
	if _, err := (&manifest.Manifest{Assets: []manifest.Asset{big, small}}).Marshal(); err != nil {
		t.Errorf("Marshal of the valid manifest = %v", err)
	}
}

// TestParseRefusesEarly: a manifest whose first asset is bad is refused
// without decoding the rest: 2 million empty asset objects (4 MB) had
// encoding/json allocate about 300 bytes each before the first was
// refused (6.75 GB for the 22 million a 64 MiB manifest holds).
func TestParseRefusesEarly(t *testing.T) {
	const n = 2_000_000
	var b bytes.Buffer
	b.WriteString(`{"version":1,"profile":"unixfs-v1-2025","assets":[{}`)
	for range n - 1 {
		b.WriteString(",{}")
	}
	b.WriteString("]}")
	data := b.Bytes()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m, err := manifest.Parse(data)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, manifest.ErrInvalid) || m != nil {
		t.Fatalf("Parse = %v, %v; want ErrInvalid", m, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("Parse allocated %d MiB to refuse its first asset, want under 16", alloc>>20)
	}
}
