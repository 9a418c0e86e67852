//go:build fault

package mesh_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
	"github.com/meshcdn/meshcdn/store"
)

const (
	killSeedDirEnv    = "MESHCDN_KILL_SEED_DIR"
	killSeedOriginEnv = "MESHCDN_KILL_SEED_ORIGIN"
)

// init turns the test binary into the seed of TestFaultSeedKilled when the
// environment asks for it; the seed runs until it is killed.
func init() {
	if dir := os.Getenv(killSeedDirEnv); dir != "" {
		killSeedChild(dir, os.Getenv(killSeedOriginEnv))
		os.Exit(1)
	}
}

// killSeedCfg is the seed's Config: serving slowly, so that the fetches
// are still running when it is killed.
func killSeedCfg(dir, origin string) mesh.Config {
	return mesh.Config{Name: "kill", Role: mesh.RoleSeed, DataDir: dir, Origin: origin,
		ListenAddrs: mesh.LoopbackAddrs(mesh.RoleSeed), MDNS: mesh.Off, NATPortMap: mesh.Off,
		ServeBytesPerSecond: 2 << 20}
}

// killSeedChild pins the assets under a/, prints its address, then pins
// those under b/ one by one (printing each), so that it is writing to its
// store when it is killed, and waits.
func killSeedChild(dir, origin string) {
	ctx := context.Background()
	n, err := mesh.New(ctx, killSeedCfg(dir, origin))
	if err != nil {
		fmt.Println("error", err)
		return
	}
	m, err := n.LoadManifest(ctx, "manifest.json")
	if err != nil {
		fmt.Println("error", err)
		return
	}
	if err := n.Pin(ctx, subManifest(m, "a/")); err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("ready", n.Addrs()[0])
	for _, a := range subManifest(m, "b/").Assets {
		if err := n.Pin(ctx, &manifest.Manifest{Version: m.Version, Profile: m.Profile, Assets: []manifest.Asset{a}}); err != nil {
			fmt.Println("error", err)
			return
		}
		fmt.Println("pinned", a.Path)
	}
	select {}
}

// subManifest is m's assets whose paths start with prefix.
func subManifest(m *manifest.Manifest, prefix string) *manifest.Manifest {
	sub := &manifest.Manifest{Version: m.Version, Profile: m.Profile}
	for _, a := range m.Assets {
		if strings.HasPrefix(a.Path, prefix) {
			sub.Assets = append(sub.Assets, a)
		}
	}
	return sub
}

// TestFaultSeedKilled: a seed (a real node in a child process, badger
// store) serves 10 concurrent fetches of an app and is killed with SIGKILL
// during them, while it also writes (pins more content). The fetches
// complete, right, from the origin; the seed restarted on its directory has
// every pin it acknowledged, whole, every block verifies, nothing was moved
// aside or dropped, and pinning its site again costs the origin nothing.
func TestFaultSeedKilled(t *testing.T) {
	s := newSite(t, killSiteSizes())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()

	ks := startKillSeed(ctx, t, dir, s.URL())
	app := newNode(t, mesh.Config{Name: "kill", Origin: s.URL(), Bootstrap: []string{ks.addr}, PeerTimeout: 2 * time.Second})
	if err := app.WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	m, err := app.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	a := subManifest(m, "a/")
	for _, as := range a.Assets {
		waitProvider(ctx, t, app, as.Cid)
	}

	// Ten fetches; the seed is killed once the first bytes arrived.
	started := make(chan struct{}, len(a.Assets))
	errs := make(chan error, len(a.Assets))
	for _, as := range a.Assets {
		go func() { errs <- readAssetWhole(ctx, app, m, as.Path, s.Site()[as.Path], started) }()
	}
	<-started
	peerBefore := app.Stats().Fetch.PeerBytes
	pinnedB := ks.kill(t)
	for range a.Assets {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	st := app.Stats().Fetch
	t.Logf("killed after %d peer bytes; fetches: %d from the seed, %d from the origin; seed had pinned %d of 20 b/ assets", peerBefore, st.PeerBytes, st.OriginBytes, len(pinnedB))
	if st.OriginBytes == 0 {
		t.Error("nothing came from the origin: the seed was not killed during the fetches")
	}
	checkKilledSeedRestart(ctx, t, dir, s, m, a, pinnedB)
}

// killSiteSizes is the site of TestFaultSeedKilled: ten assets under a/
// (fetched while the seed is killed) and twenty under b/ (pinned by the
// seed while it is killed).
func killSiteSizes() map[string]int64 {
	sizes := map[string]int64{}
	for i := range 10 {
		sizes[fmt.Sprintf("a/%d.bin", i)] = 2<<20 + int64(i)*1000
	}
	for i := range 20 {
		sizes[fmt.Sprintf("b/%d.bin", i)] = 3<<20 + int64(i)
	}
	return sizes
}

// killSeed is the seed of TestFaultSeedKilled, running in a child process.
type killSeed struct {
	cmd   *exec.Cmd
	addr  string        // the seed's first address, as it printed it
	lines chan struct{} // closed when the seed's output ends

	mu      sync.Mutex
	pinnedB []string // the b/ assets the seed said it pinned
}

// startKillSeed starts the test binary as a seed on dir (see killSeedChild)
// and waits until it is ready; the seed is killed at the end of the test.
func startKillSeed(ctx context.Context, t *testing.T, dir, origin string) *killSeed {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), killSeedDirEnv+"="+dir, killSeedOriginEnv+"="+origin)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	ks := &killSeed{cmd: cmd, lines: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		defer close(ks.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 2 && f[0] == "ready":
				ready <- f[1]
			case len(f) == 2 && f[0] == "pinned":
				ks.mu.Lock()
				ks.pinnedB = append(ks.pinnedB, f[1])
				ks.mu.Unlock()
			default:
				t.Errorf("seed: %s", sc.Text())
			}
		}
	}()
	select {
	case ks.addr = <-ready:
	case <-ctx.Done():
		t.Fatal("the seed never became ready")
	}
	return ks
}

// kill kills the seed with SIGKILL, waits for it and for the end of its
// output, and returns the b/ assets it said it pinned.
func (ks *killSeed) kill(t *testing.T) []string {
	t.Helper()
	if err := ks.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ks.cmd.Wait()
	<-ks.lines
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.pinnedB
}

// readAssetWhole reads path of m from app, signalling on started once the
// first 64 KiB were read (or failed), and checks that it read want.
func readAssetWhole(ctx context.Context, app *mesh.Node, m *manifest.Manifest, path string, want []byte, started chan<- struct{}) error {
	r, _, err := app.OpenAsset(ctx, m, path)
	if err != nil {
		return err
	}
	defer r.Close()
	first := make([]byte, 64<<10)
	n, err := io.ReadFull(r, first)
	started <- struct{}{}
	if err != nil {
		return fmt.Errorf("%s: first bytes: %w", path, err)
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if got := append(first[:n], rest...); !bytes.Equal(got, want) {
		return fmt.Errorf("%s: %d bytes read, WRONG BYTES", path, len(got))
	}
	return nil
}

// checkKilledSeedRestart restarts the killed seed on dir and checks it:
// its store is healthy, holds every pin it acknowledged (a and pinnedB),
// whole, and pinning a again costs the origin nothing.
func checkKilledSeedRestart(ctx context.Context, t *testing.T, dir string, s *meshtest.Origin, m, a *manifest.Manifest, pinnedB []string) {
	t.Helper()
	before := s.Sent()
	seed, err := mesh.New(ctx, killSeedCfg(dir, s.URL()))
	if err != nil {
		t.Fatalf("restart after SIGKILL: %v", err)
	}
	defer seed.Close()
	if h := seed.Store().Health(); h.MovedAside != "" || h.DroppedRecords != 0 || h.ReadOnly {
		t.Errorf("store health after the crash = %+v", h)
	}
	checkSeedStore(t, seed.Store(), s, m, append(assetPaths(a), pinnedB...))
	if err := seed.Pin(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got := s.Sent() - before; got != 0 {
		t.Errorf("the restarted seed fetched %d bytes of its pinned site from the origin again", got)
	}
}

func assetPaths(m *manifest.Manifest) []string {
	var out []string
	for _, a := range m.Assets {
		out = append(out, a.Path)
	}
	return out
}

// checkSeedStore checks a seed's store after a crash or damage: the
// acknowledged pins are there and whole, every block held verifies, and
// every held content reads back as the origin's bytes.
func checkSeedStore(t *testing.T, st *store.Store, s *meshtest.Origin, m *manifest.Manifest, pinned []string) {
	t.Helper()
	ctx := context.Background()
	roots := map[string]store.RootInfo{}
	for _, r := range st.Roots() {
		roots[r.Cid.KeyString()] = r
	}
	for _, p := range pinned {
		a, ok := m.Lookup(p)
		if !ok {
			t.Fatalf("no asset %s", p)
		}
		if r, ok := roots[a.Cid.KeyString()]; !ok || !r.Pinned {
			t.Errorf("pin of %s lost in the crash", p)
		}
	}
	for _, a := range m.Assets {
		if _, ok := roots[a.Cid.KeyString()]; !ok {
			continue
		}
		leaves, err := store.Leaves(ctx, st, a.Cid, a.Size)
		if err != nil {
			t.Errorf("held %s: %v", a.Path, err)
			continue
		}
		for _, l := range leaves {
			b, err := st.Get(ctx, l.Cid)
			if err != nil || !bytes.Equal(b.RawData(), s.Site()[a.Path][l.Offset:l.Offset+l.Size]) {
				t.Errorf("held %s: leaf at %d: %v or wrong bytes", a.Path, l.Offset, err)
			}
		}
	}
	keys, err := st.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for k := range keys {
		if _, err := st.Get(ctx, k); err != nil {
			t.Errorf("block %s after the crash: %v", k, err)
		}
		n++
	}
	if u := st.Usage(); u.Blocks != n || u.Used > u.Quota {
		t.Errorf("usage after the crash = %+v, %d blocks present", u, n)
	}
}
