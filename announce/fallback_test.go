package announce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// TestDHTFallback: gossip is disabled between A and B (each PubSub refuses
// the other as a peer), three more peers run only the mesh's DHT. B imports
// content; A, whose table knows nothing of it, finds B through the DHT.
// The test logs how long B's provide and A's lookups took:
//
//	go test -race -run TestDHTFallback -v ./announce/
func TestDHTFallback(t *testing.T) {
	for _, lat := range []time.Duration{0, 5 * time.Millisecond} {
		t.Run(fmt.Sprintf("latency=%v", lat), func(t *testing.T) { testDHTFallback(t, lat) })
	}
}

func testDHTFallback(t *testing.T, latency time.Duration) {
	n := newTestNet(t)
	n.mn.SetLinkDefaults(mocknet.LinkOptions{Latency: latency})
	hA, hB := n.host(), n.host()
	// Drop every pubsub RPC from the other peer (subscriptions included,
	// so neither publishes to the other). pubsub.WithPeerFilter is not
	// enough: flood publishing ignores it.
	block := func(other peer.ID) []pubsub.Option {
		return []pubsub.Option{pubsub.WithAppSpecificRpcInspector(func(p peer.ID, _ *pubsub.RPC) error {
			if p == other {
				return errBlocked
			}
			return nil
		})}
	}
	a := n.start(&tnode{h: hA}, nodeOpts{dht: true, psOpts: block(hB.ID())})
	b := n.start(&tnode{h: hB}, nodeOpts{dht: true, psOpts: block(hA.ID())})
	all := []*tnode{a, b}
	for range 3 {
		h := n.host()
		all = append(all, &tnode{h: h, d: n.dht(h, "test")})
	}
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			n.connect(all[i], all[j])
		}
	}
	// The measurement starts with the DHT up: every routing table holds
	// the other four (filled after identify; nothing signals it: poll).
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range all {
		for nd.d.RoutingTable().Size() < len(all)-1 {
			if time.Now().After(deadline) {
				t.Fatalf("routing table of %s has %d peers, want %d", nd.h.ID(), nd.d.RoutingTable().Size(), len(all)-1)
			}
			time.Sleep(time.Millisecond)
		}
	}

	const rounds = 5
	var provides, lookups []time.Duration
	for i := range rounds {
		start := time.Now()
		root := importSeed(t, b, uint64(100+i), 2000)
		// Nothing tells when B's provide is done but its counter: poll.
		deadline := time.Now().Add(20 * time.Second)
		for b.a.Stats().Provided < uint64(i+1) {
			if time.Now().After(deadline) {
				t.Fatalf("B did not provide within 20 s: %+v", b.a.Stats())
			}
			time.Sleep(time.Millisecond)
		}
		provides = append(provides, time.Since(start))
		if ps := a.a.Table().Providers(root, 0); len(ps) != 0 {
			t.Fatalf("A's table knew %v before any lookup: gossip was not disabled", ps)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start = time.Now()
		got := collect(a.a.Table().FindProvidersAsync(ctx, root, 1))
		lookups = append(lookups, time.Since(start))
		cancel()
		if len(got) != 1 || got[0] != b.h.ID() {
			t.Fatalf("round %d: A found %v through the DHT, want B", i, got)
		}
		// Now in A's table, from the DHT: a second lookup needs no DHT.
		if ps := a.a.Table().Providers(root, 0); len(ps) != 1 {
			t.Fatalf("round %d: A's table after the lookup = %v, want B", i, ps)
		}
	}
	if s := a.a.Table().Stats(); s.Fallback != rounds {
		t.Fatalf("A's table Stats = %+v, want %d fallbacks", s, rounds)
	}
	if got := a.a.Stats().Received; got != 0 {
		t.Fatalf("A received %d gossip messages from B, want none", got)
	}
	slices.Sort(provides)
	slices.Sort(lookups)
	t.Logf("5 DHT peers on mocknet, link latency %v, %d rounds: B import+provide median %v (max %v); A's table lookup through the DHT median %v (max %v)",
		latency, rounds, provides[rounds/2], provides[rounds-1], lookups[rounds/2], lookups[rounds-1])
}

var errBlocked = errors.New("blocked by the test")
