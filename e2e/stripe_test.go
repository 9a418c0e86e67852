//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// TestBrowserStripesWithGo: a page and a Go app that fetch the same asset
// at the same time from a paced origin form one stripe. The page announces
// its fetch as a FETCH (announce version 2): the app's table lists the page
// among the root's fetchers while it fetches (Table.Fetchers, what the
// fetch package stripes over) and as a holder once it is done (its HAVE).
// Both compute the same owners (examples/browser/src/stripe.js is the Go
// rule), so each takes leaves from the other: the page from the app's
// boxo server and the app from the page's Helia bitswap.
func TestBrowserStripesWithGo(t *testing.T) {
	const path = "video/clip.mp4"
	const size = 16<<20 + 5
	site := meshtest.GenerateSite(41, map[string]int64{path: size})
	s := meshtest.StartOrigin(t, meshtest.OriginConfig{
		Site:           site,
		BytesPerSecond: 8 << 20, // two whole copies take 4 s: time to split
		Latency:        30 * time.Millisecond,
		Label:          byBrowser,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	app := newNode(t, mesh.Config{Role: mesh.RoleApp, ListenAddrs: mesh.LoopbackAddrs(mesh.RoleSeed), Origin: s.URL()})
	m := s.Manifest()
	k := slices.IndexFunc(m.Assets, func(a manifest.Asset) bool { return a.Path == path })
	if k < 0 {
		t.Fatalf("%s is not in the manifest", path)
	}
	root := m.Assets[k].Cid
	d := newDriver(t)
	ps := d.open("A", pageURL(pageServer(t, nil), addr(t, app, "webtransport"), s.URL()+"/manifest.json"))
	page := mustDecode(t, ps.PeerID)

	// Watch the app's table: is the page listed as fetching the root?
	table := app.Announcer().Table()
	changes := table.Subscribe(ctx)
	var mu sync.Mutex
	sawFetcher := false
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if slices.Contains(table.Fetchers(root), page) {
				mu.Lock()
				sawFetcher = true
				mu.Unlock()
			}
			select {
			case <-changes:
			case <-watchCtx.Done():
				return
			}
		}
	}()

	// The app and the page start together.
	type goResult struct {
		b   []byte
		err error
		st  string
		pb  int64
	}
	goDone := make(chan goResult, 1)
	go func() {
		r, _, err := app.OpenAsset(ctx, m, path)
		if err != nil {
			goDone <- goResult{err: err}
			return
		}
		b, err := io.ReadAll(r)
		st := r.Stats()
		r.Close()
		goDone <- goResult{b: b, err: err, st: fmt.Sprintf("%+v", st), pb: st.PeerBytes}
	}()
	var res struct {
		Stats struct {
			Size, PeerBytes, OriginBytes int64
			Peers                        map[string]int64
			OriginJoins                  map[string]int
			Striped                      *struct{ Members, MaxMembers int }
		}
		Sha256 string
	}
	d.eval("A", fetchJS(`m.manifest.lookup('`+path+`')`, false), &res)
	g := <-goDone
	if g.err != nil {
		t.Fatal(g.err)
	}
	t.Logf("page: %+v", res.Stats)
	t.Logf("app: %s", g.st)
	t.Logf("origin sent %.2f copies to the page, %.2f to the app", float64(s.Stats().Labels["page"])/size, float64(s.Stats().Labels["go"])/size)
	if res.Sha256 != sum(site[path]) || sum(g.b) != sum(site[path]) {
		t.Fatalf("wrong bytes: page sha256 %s, app %s, want %s", res.Sha256, sum(g.b), sum(site[path]))
	}

	// Once done, the page is a holder, not a fetcher.
	for slices.Contains(table.Fetchers(root), page) || !slices.Contains(table.Providers(root, 0), page) {
		select {
		case <-changes:
		case <-ctx.Done():
			t.Fatalf("the app's table never listed the page as a holder only: fetchers %v, providers %v", table.Fetchers(root), table.Providers(root, 0))
		}
	}
	stopWatch()
	<-watched
	mu.Lock()
	defer mu.Unlock()
	if !sawFetcher {
		t.Errorf("the app's table never listed the page among the fetchers of %s (its fetch announcement was not a FETCH)", root)
	}
	if res.Stats.Striped == nil || res.Stats.Striped.MaxMembers < 2 {
		t.Errorf("the page's fetch was not striped with the app: %+v", res.Stats.Striped)
	}
	if got := res.Stats.Peers[app.ID().String()]; got == 0 {
		t.Errorf("the page took no leaf from the app: %+v", res.Stats)
	}
	if got := app.Stats().Fetch.Peers[page]; got == 0 || g.pb == 0 {
		t.Errorf("the app took no leaf from the page: by peer %v", app.Stats().Fetch.Peers)
	}
}
