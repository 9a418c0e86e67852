package mesh_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/goleak"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, meshtest.LeakOptions()...)
}

// newSite starts an origin serving generated files of the given sizes and
// their manifest.
func newSite(t *testing.T, sizes map[string]int64) *meshtest.Origin {
	return meshtest.StartOrigin(t, meshtest.OriginConfig{Site: meshtest.GenerateSite(1, sizes)})
}

// newNode starts a node on loopback for the test (see meshtest.NewNode).
var newNode = meshtest.NewNode

func TestSeedServesApp(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 3000, "video/a.mp4": 5<<20 + 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, Origin: s.URL()})
	m, err := seed.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Pin(ctx, m); err != nil {
		t.Fatal(err)
	}
	originAfterSeed := s.Sent()
	if originAfterSeed < 5<<20 {
		t.Fatalf("the seed took %d bytes from the origin, want the whole site", originAfterSeed)
	}

	// The test is about the wiring (announcements reach the app, bitswap
	// serves it), not the 200 ms race, which -race on a loaded 2-core
	// machine can lose: peers get 5 s here.
	app := newNode(t, mesh.Config{Origin: s.URL(), Bootstrap: []string{seed.Addrs()[0].String()}, PeerTimeout: 5 * time.Second})
	if err := app.WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Wait for the seed's announcement to reach the app's provider table.
	waitProvider(ctx, t, app, m.Assets[1].Cid)
	r, a, err := app.OpenAsset(ctx, m, "video/a.mp4")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	r.Close()
	if !bytes.Equal(got, s.Site()["video/a.mp4"]) {
		t.Fatalf("read %d bytes that differ from the asset's %d", len(got), a.Size)
	}
	if st.PeerBytes != a.Size || st.OriginBytes != 0 {
		t.Errorf("fetch stats: %d bytes from peers, %d from the origin; want all %d from peers", st.PeerBytes, st.OriginBytes, a.Size)
	}
	if s.Sent() != originAfterSeed {
		t.Errorf("the origin served %d more bytes after the seed", s.Sent()-originAfterSeed)
	}
	if got := app.Stats().Offload; got != 1 {
		t.Errorf("app offload = %v, want 1", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	n := newNode(t, mesh.Config{Role: mesh.RoleSeed})
	c := n.Config()
	if c.Quota != 8<<30 || c.RelayService != mesh.On || c.ServeBytesPerSecond != 128<<20 {
		t.Errorf("seed defaults = quota %d relay %v serve %d", c.Quota, c.RelayService, c.ServeBytesPerSecond)
	}
	if c.ServeBurst != 1<<20 || c.ServeEvenly != mesh.On {
		t.Errorf("seed ServeBurst = %d, want one block; ServeEvenly %v, want On", c.ServeBurst, c.ServeEvenly)
	}
	if app := newNode(t, mesh.Config{}).Config(); app.ServeBurst != 4<<20 || app.ServeEvenly != mesh.Off {
		t.Errorf("app ServeBurst = %d, want 4 MiB; ServeEvenly %v, want Off", app.ServeBurst, app.ServeEvenly)
	}
	if app := newNode(t, mesh.Config{ServeBytesPerSecond: 3 << 20}).Config(); app.ServeBurst != 3<<20 {
		t.Errorf("app ServeBurst = %d with a 3 MiB/s cap, want at most the cap", app.ServeBurst)
	}
	if _, err := mesh.New(context.Background(), mesh.Config{Name: "Bad Name", InMemory: true}); err == nil {
		t.Error("New accepted a bad mesh name")
	}
	if _, err := mesh.New(context.Background(), mesh.Config{Name: "ok"}); err == nil {
		t.Error("New accepted a config without DataDir or InMemory")
	}
}

func TestIdentitySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := mesh.Config{Name: "t", DataDir: dir, ListenAddrs: mesh.LoopbackAddrs(mesh.RoleApp), MDNS: mesh.Off, NATPortMap: mesh.Off}
	a, err := mesh.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := a.ID()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := mesh.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.ID() != id {
		t.Errorf("peer ID after restart = %s, want %s", b.ID(), id)
	}
}

func waitProvider(ctx context.Context, t *testing.T, n *mesh.Node, c cid.Cid) {
	t.Helper()
	if err := meshtest.WaitProvider(ctx, n, c); err != nil {
		t.Fatal(err)
	}
}

// TestSeedRestart stops a seed and starts it again on the same directory:
// same peer ID, nothing fetched from the origin again, and it serves again.
func TestSeedRestart(t *testing.T) {
	s := newSite(t, map[string]int64{"a.bin": 2<<20 + 5, "b.txt": 100})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	cfg := mesh.Config{Name: "restart", Role: mesh.RoleSeed, DataDir: dir, Origin: s.URL(),
		ListenAddrs: mesh.LoopbackAddrs(mesh.RoleSeed), MDNS: mesh.Off}
	seed, err := mesh.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := seed.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Pin(ctx, m); err != nil {
		t.Fatal(err)
	}
	id := seed.ID()
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	before := s.Sent()

	seed, err = mesh.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	if seed.ID() != id {
		t.Errorf("peer ID after restart = %s, want %s", seed.ID(), id)
	}
	if err := seed.Pin(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got := s.Sent() - before; got != 0 {
		t.Errorf("the restarted seed fetched %d bytes from the origin again", got)
	}
	if u := seed.Stats().Store; u.Roots != 2 || u.Pinned != u.Used {
		t.Errorf("store after restart = %+v, want 2 pinned roots", u)
	}

	app := newNode(t, mesh.Config{Name: "restart", Origin: s.URL(), Bootstrap: []string{seed.Addrs()[0].String()}, PeerTimeout: 5 * time.Second})
	if err := app.WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	a, _ := m.Lookup("a.bin")
	waitProvider(ctx, t, app, a.Cid)
	r, _, err := app.OpenAsset(ctx, m, "a.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	st := r.Stats()
	r.Close()
	if err != nil || !bytes.Equal(got, s.Site()["a.bin"]) {
		t.Fatalf("fetch from the restarted seed: %v, %d bytes", err, len(got))
	}
	if st.PeerBytes != a.Size || s.Sent() != before {
		t.Errorf("after restart: %d bytes from peers of %d, origin sent %d more", st.PeerBytes, a.Size, s.Sent()-before)
	}
}
