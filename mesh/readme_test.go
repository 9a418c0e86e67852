package mesh_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// readmeApp is the README's "Use it in your app" snippet, step for step. What differs: the snippet's
// Config literal (name, DataDir, origin) is cfg, which the test adds
// loopback ports, mDNS off and a FollowInterval of 100 ms (instead of the
// app role's minute) to; its gateway listens on ln instead of
// 127.0.0.1:8377 (Serve on ln, not ListenAndServe); and its log calls
// return the error instead.
func readmeApp(ctx context.Context, cfg mesh.Config, ln net.Listener) error {
	n, err := mesh.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	// Follow the site: its manifest is checked every minute (If-None-Match),
	// each new version is swapped into the gateway at once, and the seeds it
	// lists become bootstrap peers, kept connected.
	site, err := n.Follow(mesh.FollowConfig{URL: "manifest.json"}) // built with: go run ./examples/manifest -seeds ... DIR
	if err != nil {
		return err
	}
	defer site.Close()
	waitCtx, stopWait := context.WithTimeout(ctx, time.Minute)
	_, err = site.Wait(waitCtx) // the first version
	stopWait()
	if err != nil {
		return err
	}
	// Wait, briefly, until the node knows what the seeds hold: the first
	// page load then comes from the mesh.
	readyCtx, stopReady := context.WithTimeout(ctx, 5*time.Second)
	if err := n.Ready(readyCtx); err != nil {
		log.Print("mesh not ready, serving anyway: ", err)
	}
	stopReady()
	gw := n.Gateway(mesh.GatewayConfig{})
	site.Attach(gw)
	// The app's webview loads http://127.0.0.1:8377/...: peers first, the origin when they are slow.
	srv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// failAssets makes every asset request to the origin fail (the manifest's
// are served): from then on, only peers can serve the site.
func failAssets(r *http.Request) meshtest.Fault {
	if r.URL.Path == "/manifest.json" {
		return meshtest.Fault{}
	}
	return meshtest.Fault{Kind: meshtest.FaultStatus, Status: http.StatusServiceUnavailable}
}

// TestREADMESnippetThroughUpdateAndSeedRestart is issue 10's must-show 5
// for the README's snippet: with only the origin's address configured, the
// app finds the seed in the site's manifest and its first page load comes
// from it; it serves a redeploy (a changed, an added and a removed file);
// and when the seed restarts on the same address, the app reconnects
// within 10 s and gets from it what it had not fetched before. Once the
// seed has pinned each version the origin fails every asset request, so
// every byte the app serves came from the seed.
func TestREADMESnippetThroughUpdateAndSeedRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v1 := meshtest.Site{"index.html": []byte("<h1>one"), "app.js": testutil.Bytes(1, 200<<10),
		"old.css": testutil.Bytes(2, 9000), "video.mp4": testutil.Bytes(3, 2<<20+1)}
	origin := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: v1})
	seedCfg := mesh.Config{Name: "acme-site", Role: mesh.RoleSeed, DataDir: t.TempDir(), Origin: origin.URL(),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, MDNS: mesh.Off, NATPortMap: mesh.Off}
	seed, err := mesh.New(ctx, seedCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { seed.Close() }()
	seedCfg.ListenAddrs = listenAddrsOf(seed) // the same port on restart
	seedAddr := seed.Addrs()[0].String()
	if _, err := origin.SetSeeds(seedAddr); err != nil {
		t.Fatal(err)
	}
	// The seed's own address is among the manifest's seeds: it does not
	// bootstrap to itself.
	events := make(chan mesh.SiteEvent, 16)
	seedFollow := func() *mesh.Follower {
		f, err := seed.Follow(mesh.FollowConfig{URL: "manifest.json", Interval: time.Hour, Seeds: mesh.Off,
			OnEvent: func(ev mesh.SiteEvent) { events <- ev }})
		if err != nil {
			t.Fatal(err)
		}
		waitEvent(ctx, t, events, mesh.SitePinned)
		return f
	}
	f := seedFollow()
	origin.SetFault(failAssets)

	gw := startReadmeApp(ctx, t, origin)
	// The first page load, right after the app starts serving.
	for _, p := range []string{"index.html", "app.js", "old.css"} {
		if code, body := httpGet(t, gw+p); code != http.StatusOK || !bytes.Equal(body, v1[p]) {
			t.Fatalf("GET %s = %d with %d bytes, want 200 with its %d bytes from the seed", p, code, len(body), len(v1[p]))
		}
	}

	// Version two: the seed pins it from the origin, then the app serves it.
	v2 := meshtest.Site{"index.html": []byte("<h1>two"), "app.js": v1["app.js"], "new.js": testutil.Bytes(4, 50<<10),
		"video.mp4": v1["video.mp4"]}
	deployPinnedThenServed(ctx, t, origin, f, events, gw, v2)

	// The seed restarts on the same address; within 10 s the app is
	// connected again and gets video.mp4, which only the seed holds.
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	if seed, err = mesh.New(ctx, seedCfg); err != nil {
		t.Fatal(err)
	}
	if got := seed.Addrs()[0].String(); got != seedAddr {
		t.Fatalf("the seed restarted at %s, want %s", got, seedAddr)
	}
	within, cancelWithin := context.WithTimeout(ctx, 10*time.Second)
	defer cancelWithin()
	if err := seed.WaitPeers(within, 1); err != nil {
		t.Fatalf("the app did not reconnect to the restarted seed: %v", err)
	}
	f = seedFollow()
	defer f.Close()
	// Still within the 10 s, the app serves video.mp4, which it never
	// fetched and the origin refuses: from the seed.
	checkVideoFromRestartedSeed(within, t, origin, gw, v2["video.mp4"])
}

// deployPinnedThenServed deploys v2 on origin (its asset requests let
// through meanwhile), waits until the seed following it with f has pinned
// it (events being f's), and then, the origin failing asset requests
// again, until the app at gw serves version two's changed and added files
// (index.html, new.js); old.css, which left the site, must then be 404.
func deployPinnedThenServed(ctx context.Context, t *testing.T, origin *meshtest.Origin, f *mesh.Follower, events <-chan mesh.SiteEvent, gw string, v2 meshtest.Site) {
	t.Helper()
	origin.SetFault(nil)
	deploySite(t, origin, v2)
	f.Check()
	waitEvent(ctx, t, events, mesh.SitePinned)
	origin.SetFault(failAssets)
	for _, p := range []string{"index.html", "new.js"} {
		waitFor(ctx, t, "the app to serve version two's "+p, func() bool {
			code, body := httpGet(t, gw+p)
			return code == http.StatusOK && bytes.Equal(body, v2[p])
		})
	}
	if code, _ := httpGet(t, gw+"old.css"); code != http.StatusNotFound {
		t.Errorf("GET old.css after it left the site = %d, want 404", code)
	}
}

// checkVideoFromRestartedSeed waits, within ctx, until the app at gw serves
// video.mp4 (which it never fetched and the origin refuses), checks that it
// is video, and that the origin sent it only once (to the seed).
func checkVideoFromRestartedSeed(ctx context.Context, t *testing.T, origin *meshtest.Origin, gw string, video []byte) {
	t.Helper()
	var body []byte
	waitFor(ctx, t, "the app to serve video.mp4 from the restarted seed", func() bool {
		var code int
		code, body = httpGet(t, gw+"video.mp4")
		return code == http.StatusOK
	})
	if !bytes.Equal(body, video) {
		t.Fatalf("GET video.mp4 after the seed's restart = %d bytes that differ from its %d", len(body), len(video))
	}
	if st := origin.Stats(); st.Paths["video.mp4"].Sent != int64(len(video)) {
		t.Errorf("the origin sent %d bytes of video.mp4, want one copy (the seed's)", st.Paths["video.mp4"].Sent)
	}
}

// startReadmeApp runs readmeApp on a port of its own until the test ends,
// and returns its gateway's URL.
func startReadmeApp(ctx context.Context, t *testing.T, origin *meshtest.Origin) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gw := "http://" + ln.Addr().String() + "/"
	cfg := mesh.Config{Name: "acme-site", DataDir: t.TempDir(), Origin: origin.URL(),
		FollowInterval: 100 * time.Millisecond, ListenAddrs: mesh.LoopbackAddrs(mesh.RoleApp), MDNS: mesh.Off, NATPortMap: mesh.Off}
	appCtx, stopApp := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- readmeApp(appCtx, cfg, ln) }()
	t.Cleanup(func() {
		stopApp()
		ln.Close()
		if err := <-done; err == nil {
			t.Error("readmeApp returned nil, want the closed listener's error")
		}
	})
	return gw
}

// httpGet GETs url and returns the status and the body. It keeps no
// connection open: http.Serve, as the snippet uses it, leaves open
// connections running when its listener closes.
func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
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
