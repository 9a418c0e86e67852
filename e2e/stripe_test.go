//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

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
//
// Which way leaves go is a race with the origin: a member takes another's
// leaf from the origin itself once it is overdue, and on a loaded 2-core
// machine a headless Chromium at times reads its share from the shared
// origin at half the Go node's rate, so the app rightly finds every one
// of the page's leaves overdue (1 run in 10 to 20). So the two fetch up to
// stripeRounds assets, one after the other, until one round shows leaves
// going both ways; what the table lists and the bytes are checked in
// every round.
func TestBrowserStripesWithGo(t *testing.T) {
	const size = 16<<20 + 5
	files := map[string]int64{}
	for i := range stripeRounds {
		files[clipPath(i)] = size
	}
	site := meshtest.GenerateSite(41, files)
	s := meshtest.StartOrigin(t, meshtest.OriginConfig{
		Site:           site,
		BytesPerSecond: 8 << 20, // two whole copies take 4 s: time to split
		Latency:        30 * time.Millisecond,
		Label:          byBrowser,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := &stripeBed{
		t: t, site: site, origin: s, m: s.Manifest(),
		app: newNode(t, mesh.Config{Role: mesh.RoleApp, ListenAddrs: mesh.LoopbackAddrs(mesh.RoleSeed), Origin: s.URL()}),
		d:   newDriver(t),
	}
	ps := b.d.open("A", pageURL(pageServer(t, nil), addr(t, b.app, "webtransport"), s.URL()+"/manifest.json"))
	b.page = mustDecode(t, ps.PeerID)
	var failed []string
	for i := range stripeRounds {
		why := b.round(ctx, clipPath(i))
		if why == "" {
			return
		}
		t.Logf("round %d: %s", i, why)
		failed = append(failed, why)
	}
	t.Errorf("in none of %d rounds did leaves go both ways: %v", stripeRounds, failed)
}

// stripeRounds is how many assets TestBrowserStripesWithGo fetches at most.
const stripeRounds = 3

// clipPath is the path of the asset TestBrowserStripesWithGo fetches in
// round i.
func clipPath(i int) string { return fmt.Sprintf("video/clip%d.mp4", i) }

// stripeBed is TestBrowserStripesWithGo's origin, app and page.
type stripeBed struct {
	t      *testing.T
	site   map[string][]byte
	origin *meshtest.Origin
	m      *manifest.Manifest
	app    *mesh.Node
	d      *driver
	page   peer.ID
}

// round has the app and the page fetch path together. It fails the test
// if the bytes are wrong or the app's table did not list the page as a
// fetcher, then as a holder, and returns why the round did not show
// leaves going both ways ("" if it did).
func (b *stripeBed) round(ctx context.Context, path string) string {
	t := b.t
	asset, ok := b.m.Lookup(path)
	if !ok {
		t.Fatalf("%s is not in the manifest", path)
	}
	root, size := asset.Cid, float64(len(b.site[path]))
	sent0 := b.origin.Stats().Labels
	byPeer0 := b.app.Stats().Fetch.Peers[b.page]
	// The watcher and the wait for the page's HAVE below each have a
	// subscription: sharing one, either could take the change the other
	// waits for.
	table := b.app.Announcer().Table()
	roundCtx, endRound := context.WithCancel(ctx)
	defer endRound()
	held := table.Subscribe(roundCtx)
	sawFetcher := b.watchFetcher(roundCtx, root)

	pg, app := b.fetchTogether(ctx, path)
	sent := b.origin.Stats().Labels
	t.Logf("%s: page: %+v", path, pg.Stats)
	t.Logf("%s: app: %s", path, app.st)
	t.Logf("%s: origin sent %.2f copies to the page, %.2f to the app", path,
		float64(sent["page"]-sent0["page"])/size, float64(sent["go"]-sent0["go"])/size)
	if pg.Sha256 != sum(b.site[path]) || sum(app.b) != sum(b.site[path]) {
		t.Fatalf("wrong bytes: page sha256 %s, app %s, want %s", pg.Sha256, sum(app.b), sum(b.site[path]))
	}

	// Once done, the page is a holder, not a fetcher.
	for slices.Contains(table.Fetchers(root), b.page) || !slices.Contains(table.Providers(root, 0), b.page) {
		select {
		case <-held:
		case <-ctx.Done():
			t.Fatalf("the app's table never listed the page as a holder only: fetchers %v, providers %v", table.Fetchers(root), table.Providers(root, 0))
		}
	}
	if !sawFetcher() {
		t.Fatalf("the app's table never listed the page among the fetchers of %s (its fetch announcement was not a FETCH)", root)
	}
	switch {
	case pg.Stats.Striped == nil || pg.Stats.Striped.MaxMembers < 2:
		return fmt.Sprintf("the page's fetch was not striped with the app: %+v", pg.Stats.Striped)
	case pg.Stats.Peers[b.app.ID().String()] == 0:
		return fmt.Sprintf("the page took no leaf from the app (origin joins %v)", pg.Stats.OriginJoins)
	case b.app.Stats().Fetch.Peers[b.page] == byPeer0 || app.peerBytes == 0:
		return "the app took no leaf from the page"
	}
	return ""
}

// watchFetcher watches the app's table from now until the function it
// returns is called, which reports whether the table listed the page
// among root's fetchers meanwhile.
func (b *stripeBed) watchFetcher(ctx context.Context, root cid.Cid) func() bool {
	ctx, stop := context.WithCancel(ctx)
	table := b.app.Announcer().Table()
	changes := table.Subscribe(ctx)
	var saw atomic.Bool
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if slices.Contains(table.Fetchers(root), b.page) {
				saw.Store(true)
			}
			select {
			case <-changes:
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() bool {
		stop()
		<-watched
		return saw.Load()
	}
}

// stripePage is what the page reports of its fetch (fetchJS).
type stripePage struct {
	Stats struct {
		Size, PeerBytes, OriginBytes int64
		Peers                        map[string]int64
		OriginJoins                  map[string]int
		Striped                      *struct{ Members, MaxMembers int }
	}
	Sha256 string
}

// stripeApp is what the app's fetch gave: the bytes, its Stats printed,
// and its peer bytes.
type stripeApp struct {
	b         []byte
	st        string
	peerBytes int64
}

// fetchTogether starts the app's fetch of path and the page's together
// and returns what each got once both are done.
func (b *stripeBed) fetchTogether(ctx context.Context, path string) (stripePage, stripeApp) {
	type result struct {
		app stripeApp
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, _, err := b.app.OpenAsset(ctx, b.m, path)
		if err != nil {
			done <- result{err: err}
			return
		}
		data, err := io.ReadAll(r)
		st := r.Stats()
		r.Close()
		done <- result{app: stripeApp{b: data, st: fmt.Sprintf("%+v", st), peerBytes: st.PeerBytes}, err: err}
	}()
	var pg stripePage
	b.d.eval("A", fetchJS(`m.manifest.lookup('`+path+`')`, false), &pg)
	r := <-done
	if r.err != nil {
		b.t.Fatal(r.err)
	}
	return pg, r.app
}
