//go:build kubo

package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
)

// kubo returns the path of the Kubo binary and a fresh repo initialised with
// `--profile test,unixfs-v1-2025`: loopback only, no bootstrap peers, no
// mDNS, and the import parameters of meshcdn.
func kubo(t *testing.T) (bin string, env []string) {
	t.Helper()
	bin = os.Getenv("MESHCDN_KUBO")
	if bin == "" {
		t.Fatal("MESHCDN_KUBO must name a Kubo v0.43.1 binary (bash .ci/kubo.sh builds one)")
	}
	env = append(os.Environ(), "IPFS_PATH="+t.TempDir())
	run(t, env, nil, bin, "init", "--profile", "test,unixfs-v1-2025")
	return bin, env
}

func run(t *testing.T, env []string, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// TestKuboVectors recomputes testutil.KuboVectors with a live Kubo.
func TestKuboVectors(t *testing.T) {
	bin, env := kubo(t)
	for _, v := range testutil.KuboVectors {
		cmd := exec.Command(bin, "add", "-Q", "--only-hash")
		cmd.Env = env
		cmd.Stdin = testutil.Reader(testutil.KuboSeed, v.Size)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ipfs add (%d bytes): %v", v.Size, err)
		}
		if got := strings.TrimSpace(string(out)); got != v.Cid {
			t.Errorf("Kubo gives %s for %d bytes; the vector says %s", got, v.Size, v.Cid)
		}
	}
}

// TestManifestCommandMatchesKubo runs `go run ./examples/manifest DIR` and
// `ipfs add` on every file of the same directory.
func TestManifestCommandMatchesKubo(t *testing.T) {
	bin, env := kubo(t)
	dir := t.TempDir()
	sizes := []int64{0, 1, 1000, 1<<20 - 1, 1 << 20, 1<<20 + 1, 3<<20 + 77, 200 << 20}
	for i, size := range sizes {
		name := filepath.Join(dir, fmt.Sprintf("dir%d", i%3), fmt.Sprintf("file-%d.bin", size))
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, testutil.Bytes(uint64(100+i), size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><title>x</title>"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "./examples/manifest", "-o", "-", dir)
	cmd.Dir = ".."
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go run ./examples/manifest: %v", err)
	}
	m, err := manifest.Parse(out)
	if err != nil {
		t.Fatalf("the command's output does not parse: %v", err)
	}
	if len(m.Assets) != len(sizes)+1 {
		t.Fatalf("manifest lists %d assets, want %d", len(m.Assets), len(sizes)+1)
	}
	for _, a := range m.Assets {
		got := run(t, env, nil, bin, "add", "-Q", "--only-hash", filepath.Join(dir, a.Path))
		if got != a.Cid.String() {
			t.Errorf("%s: manifest says %s, Kubo says %s", a.Path, a.Cid, got)
		}
	}
	var raw map[string]any
	if err := json.Unmarshal(out, &raw); err != nil || raw["version"] != float64(1) {
		t.Errorf("manifest JSON version = %v (%v)", raw["version"], err)
	}
}
