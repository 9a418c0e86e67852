package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, meshtest.LeakOptions()...)
}

// seed is a seed of the site as examples/seed runs it: badger on disk, a
// fixed loopback port from its first start on, following and pinning the
// site.
type seed struct {
	t      *testing.T
	cfg    mesh.Config
	n      *mesh.Node
	f      *mesh.Follower
	events chan mesh.SiteEvent
}

// startSeed starts the seed (again, with the same DataDir and ports after a
// restart) and follows the site at origin.
func startSeed(ctx context.Context, t *testing.T, s *seed) {
	t.Helper()
	n, err := mesh.New(ctx, s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	s.n, s.events = n, make(chan mesh.SiteEvent, 16)
	if s.cfg.ListenAddrs[0] == "/ip4/127.0.0.1/tcp/0" {
		s.cfg.ListenAddrs = nil // restarts listen where the first start did
		for _, a := range n.Host().Addrs() {
			s.cfg.ListenAddrs = append(s.cfg.ListenAddrs, a.String())
		}
	}
	// The seed's own address is in the manifest's seeds: it does not
	// bootstrap to itself.
	s.f, err = n.Follow(mesh.FollowConfig{URL: "manifest.json", Interval: time.Hour, Seeds: mesh.Off,
		OnEvent: func(ev mesh.SiteEvent) { s.events <- ev }})
	if err != nil {
		t.Fatal(err)
	}
}

// pinned waits until the seed has pinned a version with the asset path.
func (s *seed) pinned(ctx context.Context, path string) *manifest.Manifest {
	s.t.Helper()
	for {
		select {
		case ev := <-s.events:
			if ev.Kind == mesh.SiteFailed {
				s.t.Fatalf("seed: site event %v: %v", ev.Kind, ev.Err)
			}
			if _, ok := ev.Manifest.Lookup(path); ok && ev.Kind == mesh.SitePinned {
				return ev.Manifest
			}
		case <-ctx.Done():
			s.t.Fatalf("seed: no version with %s pinned: %v", path, ctx.Err())
		}
	}
}

// failAssets makes every asset request to the origin fail (the manifest's
// are served).
func failAssets(r *http.Request) meshtest.Fault {
	if r.URL.Path == "/manifest.json" {
		return meshtest.Fault{}
	}
	return meshtest.Fault{Kind: meshtest.FaultStatus, Status: http.StatusServiceUnavailable}
}

// lockedBuffer collects what the app prints.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestDesktopThroughUpdateAndSeedRestart is issue 10's must-show 5 for
// examples/desktop: run (the program minus its flags), bootstrapped only
// by the seeds its site's manifest lists, serves the site from the seed,
// follows a redeploy (changed, added and removed files) and, after the
// seed restarts on the same address, reconnects within 10 s and again gets
// from the seed what only the seed holds. Once the seed has pinned a
// version, the origin fails every asset request: every byte the app
// serves must come from the seed, its first page load included.
func TestDesktopThroughUpdateAndSeedRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v1 := meshtest.Site{
		"index.html": []byte("<!doctype html><h1>version one</h1>"),
		"app.js":     testutil.Bytes(1, 300<<10),
		"old.css":    testutil.Bytes(2, 20<<10),
		"video.mp4":  testutil.Bytes(3, 3<<20+5),
	}
	origin := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: v1})
	s := &seed{t: t, cfg: mesh.Config{Name: "acme-site", Role: mesh.RoleSeed, DataDir: t.TempDir(), Origin: origin.URL(),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, MDNS: mesh.Off, NATPortMap: mesh.Off}}
	// The seed's address is known once it runs; the site then lists it.
	startSeed(ctx, t, s)
	seedID, seedAddr := s.n.ID(), s.n.Addrs()[0].String()
	if _, err := origin.SetSeeds(seedAddr); err != nil {
		t.Fatal(err)
	}
	s.pinned(ctx, "video.mp4")
	origin.SetFault(failAssets) // from now on, only the seed can serve the site

	n, gw, out, updated := startDesktop(ctx, t, origin)
	if got := n.Config().Bootstrap; len(got) != 1 || got[0] != seedAddr {
		t.Fatalf("the app's bootstrap peers = %q, want the manifest's seed %s", got, seedAddr)
	}
	if strings.Contains(out.String(), "not ready") {
		t.Fatalf("the app did not find the mesh ready: %s", out)
	}

	// The first page load, right after the app serves: version one comes
	// from the seed.
	fromSeed(t, n, origin, gw, v1, "index.html", "app.js", "old.css")

	// Version two: index.html changed, new.js added, old.css removed.
	v2 := meshtest.Site{"index.html": []byte("<!doctype html><h1>version two</h1>"), "app.js": v1["app.js"],
		"new.js": testutil.Bytes(4, 100<<10), "video.mp4": v1["video.mp4"]}
	deployAndWaitPinned(ctx, t, s, origin, v2)
	checkAppUpdated(ctx, t, n, origin, gw, out, updated, v2)

	// The seed restarts on the same address; the app reconnects within
	// 10 s, and what only the seed holds (video.mp4, never fetched by the
	// app) comes from it.
	if err := s.n.Close(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	startSeed(ctx, t, s)
	if s.n.ID() != seedID || s.n.Addrs()[0].String() != seedAddr {
		t.Fatalf("the seed restarted as %s, want %s", s.n.Addrs()[0], seedAddr)
	}
	within, cancelWithin := context.WithTimeout(ctx, 10*time.Second)
	defer cancelWithin()
	// The seed is the app's only peer: a connection is the app's redial.
	// (The seed's side of it can be up a moment before the app's: the app's
	// own count is what Ready goes by.)
	if err := n.WaitPeers(within, 1); err != nil {
		t.Fatalf("the app did not reconnect to the restarted seed: %v", err)
	}
	if err := n.Ready(within); err != nil {
		t.Fatalf("the app's Ready after the seed's restart: %v", err)
	}
	t.Logf("the app reconnected %v after the seed restarted", time.Since(restarted).Round(time.Millisecond))
	fromSeed(t, n, origin, gw, v2, "video.mp4")
}

// deployAndWaitPinned deploys v2 on origin (its asset requests let
// through meanwhile, the seeds it lists kept) and waits until the seed s
// has pinned it; the origin then fails asset requests again.
func deployAndWaitPinned(ctx context.Context, t *testing.T, s *seed, origin *meshtest.Origin, v2 meshtest.Site) {
	t.Helper()
	origin.SetFault(nil)
	if _, err := origin.SetSite(v2); err != nil { // the seeds stay
		t.Fatal(err)
	}
	s.f.Check()
	s.pinned(ctx, "new.js")
	origin.SetFault(failAssets)
}

// checkAppUpdated checks that the app (its node n, its gateway at gw,
// what it printed in out and the versions it updated to on updated)
// updates to version two (v2) and says so, and then serves its changed and
// added files from the seed, and old.css, which left the site, as 404.
func checkAppUpdated(ctx context.Context, t *testing.T, n *mesh.Node, origin *meshtest.Origin, gw string, out *lockedBuffer, updated <-chan *manifest.Manifest, v2 meshtest.Site) {
	t.Helper()
	select {
	case m := <-updated:
		if _, ok := m.Lookup("new.js"); !ok {
			t.Fatalf("the app updated to a version without new.js")
		}
	case <-ctx.Done():
		t.Fatal("the app saw no update")
	}
	if got := out.String(); !strings.Contains(got, "site updated: 4 assets now (was 4)") {
		t.Errorf("the app printed %q, want it to say the site was updated", got)
	}
	for _, p := range []string{"index.html", "new.js"} { // announced by the seed as it pinned them
		a, _ := origin.Manifest().Lookup(p)
		if err := meshtest.WaitProvider(ctx, n, a.Cid); err != nil {
			t.Fatal(err)
		}
	}
	fromSeed(t, n, origin, gw, v2, "index.html", "new.js")
	if code, _ := get(t, gw+"old.css"); code != http.StatusNotFound {
		t.Errorf("GET old.css after it left the site = %d, want 404", code)
	}
}

// startDesktop runs the app (run, as main does with -loopback) on a port of
// its own until the test ends. It returns the app's node, its gateway's
// URL, what it printed, and the versions it updated to.
func startDesktop(ctx context.Context, t *testing.T, origin *meshtest.Origin) (*mesh.Node, string, *lockedBuffer, <-chan *manifest.Manifest) {
	t.Helper()
	// PeerTimeout is generous: the test is about the app's life, not the
	// 200 ms race, which -race on a loaded machine can lose.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gw := "http://" + ln.Addr().String() + "/"
	out := &lockedBuffer{}
	started := make(chan *mesh.Node, 1)
	updated := make(chan *manifest.Manifest, 16)
	cfg := mesh.Config{Name: "acme-site", DataDir: t.TempDir(), Origin: origin.URL(), FollowInterval: 100 * time.Millisecond,
		PeerTimeout: 5 * time.Second, ListenAddrs: mesh.LoopbackAddrs(mesh.RoleApp), MDNS: mesh.Off, NATPortMap: mesh.Off}
	appCtx, stopApp := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(appCtx, cfg, origin.ManifestURL(), ln, app{out: out, errOut: out, ready: 10 * time.Second,
			started: func(n *mesh.Node) { started <- n },
			event: func(ev mesh.SiteEvent) {
				if ev.Kind == mesh.SiteUpdated {
					updated <- ev.Manifest
				}
			}})
	}()
	t.Cleanup(func() {
		stopApp()
		if err := <-done; err != nil {
			t.Errorf("run = %v", err)
		}
	})
	select {
	case n := <-started:
		return n, gw, out, updated
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("run = %v before serving", err)
		return nil, "", nil, nil
	}
}

// fromSeed gets each path of site through the app's gateway at gw and
// checks its bytes, and that they came from peers: the app's node counts
// them as peer bytes, none from the origin, and the origin had no request
// for the path.
func fromSeed(t *testing.T, n *mesh.Node, origin *meshtest.Origin, gw string, site meshtest.Site, paths ...string) {
	t.Helper()
	m := origin.Manifest()
	for _, p := range paths {
		a, ok := m.Lookup(p)
		if !ok {
			t.Fatalf("%s is not in the site's manifest", p)
		}
		before, originBefore := n.Stats().Fetch, origin.Stats().Paths[p]
		code, body := get(t, gw+p)
		after, originAfter := n.Stats().Fetch, origin.Stats().Paths[p]
		if code != http.StatusOK || !bytes.Equal(body, site[p]) {
			t.Fatalf("GET %s = %d with %d bytes, want 200 with its %d bytes", p, code, len(body), len(site[p]))
		}
		if peer, org := after.PeerBytes-before.PeerBytes, after.OriginBytes-before.OriginBytes; peer != a.Size || org != 0 {
			t.Errorf("GET %s: %d bytes from peers, %d from the origin; want all %d from the seed", p, peer, org, a.Size)
		}
		if originAfter.Requests != originBefore.Requests {
			t.Errorf("GET %s: the origin had %d requests for it", p, originAfter.Requests-originBefore.Requests)
		}
	}
}

// get GETs url and returns the status and the body.
func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, body
}
