package announce

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/store"
)

// loopbackNode starts a real libp2p host on 127.0.0.1 (TCP) with a
// gossipsub (PubSubOptions and a tracer) and an Announcer on it (no DHT, no
// mDNS; an in-memory store as Holdings if withStore), all closed at
// cleanup.
func loopbackNode(t testing.TB, withStore bool) *tnode {
	t.Helper()
	return loopbackNodeWith(t, withStore, false)
}

// loopbackNodeAddrs is loopbackNode (no store) with Config.AnnounceAddrs.
func loopbackNodeAddrs(t testing.TB) *tnode {
	t.Helper()
	return loopbackNodeWith(t, false, true)
}

// loopbackNodeWith is loopbackNode, with Config.AnnounceAddrs set to addrs
// and the host made with opts too.
func loopbackNodeWith(t testing.TB, withStore, addrs bool, opts ...libp2p.Option) *tnode {
	t.Helper()
	h, err := libp2p.New(append([]libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	nd := &tnode{h: h}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	nd.tr = newTracer(Topic("test"))
	psOpts := append(PubSubOptions(), pubsub.WithRawTracer(nd.tr))
	if nd.ps, err = pubsub.NewGossipSub(ctx, h, psOpts...); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: "test", Host: h, PubSub: nd.ps, DisableDHT: true, MDNS: Off, SummaryInterval: time.Hour, AnnounceAddrs: addrs}
	if withStore {
		if nd.st, err = store.New(store.Config{InMemory: true, Quota: 1 << 20}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.st.Close() })
		cfg.Holdings = nd.st
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	nd.a = a
	return nd
}

// connectLoopback dials b from a and waits until both see each other on
// the topic.
func connectLoopback(t testing.TB, a, b *tnode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.h.Connect(ctx, peer.AddrInfo{ID: b.h.ID(), Addrs: b.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	awaitTopicPeers(t, 1, a, b)
}

// awaitFetching waits until nd's table lists p among root's fetchers (want)
// or no longer does (!want), and returns how long that took.
func awaitFetching(t testing.TB, nd *tnode, root cid.Cid, p peer.ID, want bool, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	sub := nd.a.Table().Subscribe(ctx)
	for slices.Contains(nd.a.Table().Fetchers(root), p) != want {
		if _, ok := <-sub; !ok {
			t.Fatalf("%s: Fetchers(%s) still %v after %v, want %s in it: %v", nd.h.ID(), root,
				nd.a.Table().Fetchers(root), within, p, want)
		}
	}
	return time.Since(start)
}

// TestFetchAnnouncementOverLoopback: two real hosts on 127.0.0.1. When A
// starts a fetch, B lists A among the root's fetchers (and providers)
// within a bound; when A then holds the content (an ordinary HAVE), B moves
// it to the holders; when A abandons another fetch (DROP), B forgets it.
func TestFetchAnnouncementOverLoopback(t *testing.T) {
	a, b := loopbackNode(t, false), loopbackNode(t, false)
	connectLoopback(t, a, b)
	ctx := context.Background()
	root := testCid(t, cid.DagProtobuf, "a flash crowd's site")
	if err := a.a.Fetching(ctx, root); err != nil {
		t.Fatal(err)
	}
	// The bound is generous for a loaded machine; on an idle one it is a
	// millisecond or two.
	took := awaitFetching(t, b, root, a.h.ID(), true, 2*time.Second)
	t.Logf("B learned that A is fetching in %v", took)
	if !hasProvider(b, root, a.h.ID()) {
		t.Fatalf("B lists A among the fetchers of %s but not among its providers", root)
	}
	if err := a.a.Announce(ctx, root); err != nil {
		t.Fatal(err)
	}
	awaitFetching(t, b, root, a.h.ID(), false, 2*time.Second)
	if !hasProvider(b, root, a.h.ID()) {
		t.Fatalf("A announced %s held, and B no longer lists it as a provider", root)
	}

	other := testCid(t, cid.Raw, "abandoned")
	if err := a.a.Fetching(ctx, other); err != nil {
		t.Fatal(err)
	}
	awaitFetching(t, b, other, a.h.ID(), true, 2*time.Second)
	if err := a.a.Abandoned(ctx, other); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, b, other, a.h.ID())
	if got := b.a.Table().Fetchers(other); len(got) != 0 {
		t.Fatalf("Fetchers after the DROP = %v, want none", got)
	}
}

// TestFetchReannouncedToLateJoiner: a fetch announced before any peer was
// there reaches a peer that connects later, with the summary sent when it
// joins the topic, as a FETCH.
func TestFetchReannouncedToLateJoiner(t *testing.T) {
	a, b := loopbackNode(t, false), loopbackNode(t, false)
	root := testCid(t, cid.DagProtobuf, "fetched before anyone came")
	if err := a.a.Fetching(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	connectLoopback(t, a, b)
	took := awaitFetching(t, b, root, a.h.ID(), true, 5*time.Second)
	t.Logf("B learned of A's earlier fetch %v after joining", took)
	if err := a.a.Abandoned(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, b, root, a.h.ID())
}

// TestFetcherDialableThroughGossip: three real hosts in a line, A-B-C, so
// that A hears C only through B. When C starts a fetch, A lists it among
// the root's fetchers and can dial it: C's addresses came with its
// announcement (ADDRS). Without them A knew C by ID only, and a fetch on A
// could not ask the peer its stripe gave leaves to.
func TestFetcherDialableThroughGossip(t *testing.T) {
	a, b, c := loopbackNode(t, false), loopbackNode(t, false), loopbackNodeAddrs(t)
	connectLoopback(t, a, b)
	connectLoopback(t, b, c)
	// B forwards only to its mesh, which forms at heartbeats.
	awaitMesh(t, []*tnode{a, b, c}, func(i int) int { return 1 + i%2 })
	root := testCid(t, cid.DagProtobuf, "content C fetches")
	if err := c.a.Fetching(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	awaitFetching(t, a, root, c.h.ID(), true, 5*time.Second)
	// C sends its ADDRS before the FETCH, yet A can list the FETCH before
	// it has read the ADDRS (a suite run saw "no addresses" here; pubsub
	// validates messages concurrently): a fetch on A dials C once the
	// addresses are in, as its stripe's members are looked at again each
	// pass (fetch.TestStripingMemberAddressesLate).
	deadline := time.Now().Add(5 * time.Second)
	for len(a.h.Peerstore().Addrs(c.h.ID())) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("A never learned C's addresses")
		}
		time.Sleep(10 * time.Millisecond) // the address book has no event to await
	}
	if a.h.Network().Connectedness(c.h.ID()) == network.Connected {
		t.Fatal("A is connected to C already: the test needs them apart")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.h.Connect(ctx, a.h.Peerstore().PeerInfo(c.h.ID())); err != nil {
		t.Fatalf("A cannot dial C, a fetcher it heard of: %v", err)
	}
	if got := a.a.Stats().Received; got < 2 {
		t.Fatalf("A received %d messages, want C's ADDRS and FETCH", got)
	}
}
