package mesh_test

import (
	"bytes"
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/announce"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// pinnedSeed starts a seed that holds all of s.
func pinnedSeed(ctx context.Context, t *testing.T, s *meshtest.Origin, name string) (*mesh.Node, *manifest.Manifest) {
	t.Helper()
	seed := newNode(t, mesh.Config{Name: name, Role: mesh.RoleSeed, Origin: s.URL(), DisableDHT: true})
	m, err := seed.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Pin(ctx, m); err != nil {
		t.Fatal(err)
	}
	return seed, m
}

// fetchAll reads path of m through n and returns the fetch's stats.
func fetchAll(ctx context.Context, t *testing.T, n *mesh.Node, m *manifest.Manifest, path string, want []byte) (peerBytes, originBytes int64) {
	t.Helper()
	r, _, err := n.OpenAsset(ctx, m, path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	st := r.Stats()
	r.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetch %s: %v, %d bytes of %d", path, err, len(got), len(want))
	}
	return st.PeerBytes, st.OriginBytes
}

// TestFirstFetchAfterReadyComesFromTheSeed (issue 10, must-show 3): a fresh
// app bootstrapped to a seed that holds the site takes every byte of its very
// first fetch, made right after Ready, from the seed: 20 runs of 20.
//
// Peers get 5 s here (PeerTimeout) because the test is about what the app
// knows when Ready returns, not the 200 ms race, which -race on a loaded
// 2-core machine can lose. Without the summary request the app knows no
// provider at Ready and goes to the origin at once, whatever PeerTimeout.
func TestFirstFetchAfterReadyComesFromTheSeed(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 3000, "app.js": 1<<20 + 77})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	seed, m := pinnedSeed(ctx, t, s, "ready")
	served := s.Sent()
	var waits []time.Duration // New to Ready
	for run := range 20 {
		start := time.Now()
		app, err := mesh.New(ctx, mesh.Config{Name: "ready", InMemory: true, Origin: s.URL(),
			Bootstrap: []string{seed.Addrs()[0].String()}, PeerTimeout: 5 * time.Second, DisableDHT: true,
			ListenAddrs: mesh.LoopbackAddrs(mesh.RoleApp), MDNS: mesh.Off, NATPortMap: mesh.Off})
		if err != nil {
			t.Fatal(err)
		}
		if err := app.Ready(ctx); err != nil {
			app.Close()
			t.Fatalf("run %d: Ready = %v", run, err)
		}
		waits = append(waits, time.Since(start))
		path := []string{"index.html", "app.js"}[run%2]
		peer, origin := fetchAll(ctx, t, app, m, path, s.Site()[path])
		app.Close()
		if origin != 0 || peer != int64(len(s.Site()[path])) {
			t.Fatalf("run %d: first fetch of %s after Ready: %d bytes from peers, %d from the origin; want all %d from the seed",
				run, path, peer, origin, len(s.Site()[path]))
		}
	}
	if got := s.Sent() - served; got != 0 {
		t.Errorf("the origin served %d bytes to the apps", got)
	}
	slices.Sort(waits)
	t.Logf("New to Ready: min %v, median %v, max %v over %d apps", waits[0].Round(time.Millisecond),
		waits[len(waits)/2].Round(time.Millisecond), waits[len(waits)-1].Round(time.Millisecond), len(waits))
}

// TestFetchBeforeSummaryRacesTheSeed: a fetch made while the seed's summary
// is still pending (here: the seed never answers it) races the seed before
// going to the origin, instead of going to the origin at once.
func TestFetchBeforeSummaryRacesTheSeed(t *testing.T) {
	s := newSite(t, map[string]int64{"app.js": 1<<20 + 77})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seed, m := pinnedSeed(ctx, t, s, "pending")
	// The seed takes summary requests and never answers them. Its gossip
	// summary on join may still reach the app before the fetch (then the
	// run shows nothing and is skipped); usually the fetch comes first.
	hung := make(chan struct{})
	defer close(hung)
	seed.Host().SetStreamHandler(announce.SummaryProtocol("pending"), func(st network.Stream) {
		<-hung
		st.Reset()
	})
	app := newNode(t, mesh.Config{Name: "pending", Origin: s.URL(), Bootstrap: []string{seed.Addrs()[0].String()},
		PeerTimeout: 5 * time.Second, DisableDHT: true})
	if err := app.WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	a, _ := m.Lookup("app.js")
	if ps := app.Announcer().Table().Providers(a.Cid, 0); len(ps) != 0 {
		t.Skipf("the seed's gossip reached the app before the fetch (%v): nothing to show", ps)
	}
	served := s.Sent()
	peer, origin := fetchAll(ctx, t, app, m, "app.js", s.Site()["app.js"])
	if origin != 0 || peer != a.Size || s.Sent() != served {
		t.Errorf("fetch with the seed's summary pending: %d bytes from peers, %d from the origin; want all %d from the seed", peer, origin, a.Size)
	}
}

// TestSummaryFromSeedListsOtherHolders: an app bootstrapped to a seed learns
// from the seed's summary who else holds content, with their addresses, and
// fetches from that peer though it never heard its gossip.
func TestSummaryFromSeedListsOtherHolders(t *testing.T) {
	s := newSite(t, map[string]int64{"a.bin": 2<<20 + 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seed := newNode(t, mesh.Config{Name: "others", Role: mesh.RoleSeed, DisableDHT: true})
	holder := newNode(t, mesh.Config{Name: "others", Origin: s.URL(), Bootstrap: []string{seed.Addrs()[0].String()}, DisableDHT: true})
	if err := holder.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := holder.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := m.Lookup("a.bin")
	fetchAll(ctx, t, holder, m, "a.bin", s.Site()["a.bin"])
	waitProvider(ctx, t, seed, a.Cid) // the seed heard the holder's HAVE
	served := s.Sent()

	app := newNode(t, mesh.Config{Name: "others", Origin: s.URL(), Bootstrap: []string{seed.Addrs()[0].String()},
		PeerTimeout: 5 * time.Second, DisableDHT: true})
	if err := app.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if ps := app.Announcer().Table().Providers(a.Cid, 0); len(ps) != 1 || ps[0] != holder.ID() {
		t.Fatalf("after Ready the app's table lists %v for a.bin, want the holder %s", ps, holder.ID())
	}
	if len(app.Host().Peerstore().Addrs(holder.ID())) == 0 {
		t.Fatal("the seed's summary gave no address of the holder")
	}
	peer, origin := fetchAll(ctx, t, app, m, "a.bin", s.Site()["a.bin"])
	if origin != 0 || peer != a.Size || s.Sent() != served {
		t.Errorf("fetch: %d bytes from peers, %d from the origin; want all %d from the holder", peer, origin, a.Size)
	}
}

// TestOthersTrustedFromSeedsOnly: a peer that is not a bootstrap peer
// cannot plant other holders in a node's table through its summary answer
// (it could send the node's fetches to peers that have nothing); its own
// roots are taken, as from its gossip. The same answer from a bootstrap
// peer is believed.
func TestOthersTrustedFromSeedsOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app := newNode(t, mesh.Config{Name: "trust", DisableDHT: true})
	liar, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer liar.Close()
	sum := func(s string) cid.Cid {
		h, _ := mh.Sum([]byte(s), mh.SHA2_256, -1)
		return cid.NewCidV1(cid.Raw, h)
	}
	own, planted := sum("the liar's own"), sum("planted")
	victim, err := peer.Decode("12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp")
	if err != nil {
		t.Fatal(err)
	}
	answer, err := announce.EncodeSummary(announce.Summary{TTL: time.Minute, Own: []cid.Cid{own},
		Others: []announce.Holder{{Peer: victim, Roots: []cid.Cid{planted}}}})
	if err != nil {
		t.Fatal(err)
	}
	liar.SetStreamHandler(announce.SummaryProtocol("trust"), func(st network.Stream) {
		io.ReadFull(st, make([]byte, 2))
		st.Write(answer) // others, asked for or not
		st.Close()
	})
	table := app.Announcer().Table()
	awaitRoot := func(c cid.Cid) {
		t.Helper()
		changes := table.Subscribe(ctx)
		for len(table.Providers(c, 0)) == 0 {
			select {
			case <-changes:
			case <-ctx.Done():
				t.Fatalf("%s never reached the table", c)
			}
		}
	}
	liarAddr := liar.Addrs()[0].Encapsulate(ma.StringCast("/p2p/" + liar.ID().String())).String()
	if err := app.Connect(ctx, liarAddr); err != nil {
		t.Fatal(err)
	}
	awaitRoot(own) // the answer is in: others go first, then own roots
	if ps := table.Providers(planted, 0); len(ps) != 0 {
		t.Fatalf("a peer that is not a seed planted %v as holders", ps)
	}
	if err := app.SetBootstrap([]string{liarAddr}); err != nil {
		t.Fatal(err)
	}
	awaitRoot(planted)
	if ps := table.Providers(planted, 0); len(ps) != 1 || ps[0] != victim {
		t.Fatalf("a seed's holders: %v, want [%s]", ps, victim)
	}
}

// TestReadyBesideFailedIdentify: a seed whose identify fails (here it
// does not answer identify at all; in an audit, a few peers held its
// identify streams open and it reset every new app's) is asked for its
// summary all the same, and Ready returns with what the seed holds known.
// Before, Ready waited on an identify that go-libp2p never runs twice on
// a connection, until ctx ended.
func TestReadyBesideFailedIdentify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newSite(t, map[string]int64{"a.bin": 3000})
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, Origin: s.URL(), DisableDHT: true})
	if err := seed.Pin(ctx, s.Manifest()); err != nil {
		t.Fatal(err)
	}
	seed.Host().RemoveStreamHandler(identify.ID)
	app := newNode(t, mesh.Config{Bootstrap: []string{seed.Addrs()[0].String()}, DisableDHT: true})
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := app.Ready(rctx); err != nil {
		t.Fatalf("Ready beside a seed whose identify fails = %v, want nil", err)
	}
	a, _ := s.Manifest().Lookup("a.bin")
	if got := app.Announcer().Table().Providers(a.Cid, 0); !slices.Contains(got, seed.ID()) {
		t.Errorf("providers of a.bin after Ready = %v, want the seed (its summary)", got)
	}
}
