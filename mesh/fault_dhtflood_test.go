//go:build fault

package mesh_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/announce"
)

// TestFaultProviderFlood replays attack 3 of issue 11: one connection sends
// ADD_PROVIDER records for ever new keys. go-libp2p-kad-dht v0.42 kept them
// all (48 h) in memory: 5 million records took a seed's live heap from
// 155 MiB to 1.28 GiB. Now a seed keeps at most 10,000 records of one
// provider (100,000 in all, about 25 MiB). The attacker sends 12,000
// records; the last ones are not kept (GET_PROVIDERS for them returns
// nobody), the first ones are, the seed's own record of its content is
// still served, and the honest app's fetch beside it completes from the
// seed within 2x its baseline.
func TestFaultProviderFlood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := newBed(t, 1, nil)
	base := b.baseline(ctx, t, "a0.bin")
	heap0 := liveHeapMiB()

	h := attacker(t)
	connectTo(ctx, t, h, b.seed)
	proto := announce.ProtocolPrefix(b.seed.Config().Name) + "/kad/1.0.0"
	s, err := h.NewStream(ctx, b.seed.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	sendProviderFlood(t, h, s, 12_000)
	providers := func(k []byte) []peer.ID {
		t.Helper()
		return queryProviders(ctx, t, h, b.seed.ID(), proto, k)
	}
	if ps := providers(floodKey(0)); len(ps) != 1 || ps[0] != h.ID() {
		t.Errorf("providers of the first key = %v, want the attacker (under its cap)", ps)
	}
	if ps := providers(floodKey(11_000)); len(ps) != 0 {
		t.Errorf("providers of key 11,000 = %v, want none (past the attacker's cap of %d)", ps, announce.MaxProviderRecordsPerPeer)
	}
	a, _ := b.m.Lookup("a0.bin")
	if ps := providers(a.Cid.Hash()); !slices.Contains(ps, b.seed.ID()) {
		t.Errorf("providers of the seed's content = %v, want the seed among them", ps)
	}

	app := b.newApp(ctx, t)
	d, st, err := b.fetch(ctx, app, "a0.bin")
	if err != nil {
		t.Fatalf("honest fetch after the flood: %v", err)
	}
	t.Logf("honest fetch: baseline %v, after the flood %v (%.1fx)", base, d, float64(d)/float64(base))
	if limit := max(2*base, base+time.Second); d > limit {
		t.Errorf("honest fetch after the flood took %v, want at most %v", d, limit)
	}
	b.checkHonest(t, app, st)
	heap1 := liveHeapMiB()
	t.Logf("live heap: %.0f MiB before the flood, %.0f MiB after", heap0, heap1)
	if heap1-heap0 > 64 {
		t.Errorf("live heap grew by %.0f MiB, want at most 64", heap1-heap0)
	}
}

// floodKey is the i-th junk key of TestFaultProviderFlood.
func floodKey(i int) []byte {
	m, _ := mh.Sum([]byte(fmt.Sprint("junk", i)), mh.SHA2_256, -1)
	return m
}

// sendProviderFlood sends n ADD_PROVIDER records naming h, for floodKey(0)
// to floodKey(n-1), on the DHT stream s, and returns once the seed has read
// them all.
func sendProviderFlood(t *testing.T, h host.Host, s network.Stream, n int) {
	t.Helper()
	w := pbio.NewDelimitedWriter(s)
	self := dhtpb.PeerInfosToPBPeers(h.Network(), []peer.AddrInfo{{ID: h.ID(), Addrs: h.Addrs()}})
	for i := range n {
		m := dhtpb.NewMessage(dhtpb.Message_ADD_PROVIDER, floodKey(i), 0)
		m.ProviderPeers = self
		if err := w.WriteMsg(m); err != nil {
			t.Fatalf("ADD_PROVIDER %d: %v", i, err)
		}
	}
	// ADD_PROVIDER has no answer; the seed reads a stream's messages in
	// order, so the answer to a GET_PROVIDERS sent after them says it has
	// read them all.
	if err := w.WriteMsg(dhtpb.NewMessage(dhtpb.Message_GET_PROVIDERS, floodKey(0), 0)); err != nil {
		t.Fatal(err)
	}
	var resp dhtpb.Message
	if err := pbio.NewDelimitedReader(s, network.MessageSizeMax).ReadMsg(&resp); err != nil {
		t.Fatalf("GET_PROVIDERS after the flood: %v", err)
	}
}

// queryProviders asks the peer p, on a new stream of h for proto (its DHT
// protocol), for the providers of the key k.
func queryProviders(ctx context.Context, t *testing.T, h host.Host, p peer.ID, proto protocol.ID, k []byte) []peer.ID {
	t.Helper()
	q, err := h.NewStream(ctx, p, proto)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Reset()
	if err := pbio.NewDelimitedWriter(q).WriteMsg(dhtpb.NewMessage(dhtpb.Message_GET_PROVIDERS, k, 0)); err != nil {
		t.Fatal(err)
	}
	var resp dhtpb.Message
	if err := pbio.NewDelimitedReader(q, network.MessageSizeMax).ReadMsg(&resp); err != nil {
		t.Fatal(err)
	}
	var ps []peer.ID
	for _, ai := range dhtpb.PBPeersToPeerInfos(resp.ProviderPeers) {
		ps = append(ps, ai.ID)
	}
	return ps
}
