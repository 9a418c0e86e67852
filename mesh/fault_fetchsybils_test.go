//go:build fault

package mesh_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/announce"
	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// TestFaultSybilFetchers replays a forged crowd over live gossip: one
// attacker host publishes FETCHes of a 16 MiB asset under 200 new keys,
// so that the app's table lists 64 of them as fetching it, and the app,
// which can reach none of them, fetches it with peers and the origin both
// allowed. Before a fetch's patience with members it has no sign of was
// bounded, this took 2 min 48 s (first byte after 40 s) against 0.1-0.3 s
// for another asset of the same size, unflooded; the bound is twice
// StallTimeout plus a few times that baseline (a stall is minutes). It
// once took 8-22 s (22 s failed CI): the crowd was judged only after the
// reader had waited StallTimeout on one leaf, and each leaf a backup took
// from the origin restarted that wait; now the waits add up while no peer
// has delivered (crowdJudged), 5.8-6.1 s in 10 runs.
func TestFaultSybilFetchers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	site := newSite(t, map[string]int64{"a0.bin": nhAssetSize, "a1.bin": nhAssetSize})
	a0, _ := site.Manifest().Lookup("a0.bin")
	// The seed holds nothing: it relays the gossip.
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, Origin: site.URL()})
	app := newNode(t, mesh.Config{Bootstrap: []string{seed.Addrs()[0].String()}, Origin: site.URL()})
	if err := app.WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f := newSybilFlood(ctx, t, seed)
	for range 200 {
		f.publishKind(ctx, t, announce.Fetch, time.Hour, []cid.Cid{a0.Cid})
	}
	f.settle(ctx, t)
	table := app.Announcer().Table()
	waitFor(ctx, t, "the app to list the forged fetchers", func() bool {
		return len(table.Fetchers(a0.Cid)) == announce.DefaultMaxFetchers
	})
	base := originFetch(ctx, t, app, site, "a1.bin")
	d := originFetch(ctx, t, app, site, "a0.bin")
	bound := 2*app.Fetcher().Config().StallTimeout + 4*base + 2*time.Second
	t.Logf("unflooded %v, beside 64 forged fetchers %v (bound %v)", base, d, bound)
	if d > bound {
		t.Errorf("the fetch beside forged fetchers took %v, over %v", d, bound)
	}
}

// originFetch reads the asset at path on n, peers and origin allowed,
// checks its bytes and returns how long it took.
func originFetch(ctx context.Context, t *testing.T, n *mesh.Node, site *meshtest.Origin, path string) time.Duration {
	t.Helper()
	a, _ := site.Manifest().Lookup(path)
	tg, err := fetch.AssetTarget(a, site.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := n.Fetcher().Open(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got bytes.Buffer
	if _, err := io.Copy(&got, r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	d := time.Since(start)
	if !bytes.Equal(got.Bytes(), site.Site()[path]) {
		t.Fatalf("%s: wrong bytes", path)
	}
	return d
}
