//go:build fault

package mesh_test

import (
	"context"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/store"
)

// bitswapProtocols are the protocol IDs boxo's bitswap speaks.
var bitswapProtocols = []protocol.ID{"/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0", "/ipfs/bitswap"}

// leafCids lists the leaf CIDs of a.
func leafCids(t *testing.T, a manifest.Asset) []cid.Cid {
	t.Helper()
	ls, err := store.Leaves(context.Background(), dagfile.NewNodes(a.Nodes), a.Cid, a.Size)
	if err != nil {
		t.Fatal(err)
	}
	cs := make([]cid.Cid, len(ls))
	for i, l := range ls {
		cs[i] = l.Cid
	}
	return cs
}

// sendWants sends want entries for cs to n from h on a new stream, and
// again every interval until ctx ends (interval 0: once), as an attacker
// that keeps asking does. The stream stays open.
func sendWants(ctx context.Context, t *testing.T, h host.Host, n *mesh.Node, cs []cid.Cid, typ bspb.Message_Wantlist_WantType, interval time.Duration) {
	t.Helper()
	s, err := h.NewStream(ctx, n.ID(), bitswapProtocols...)
	if err != nil {
		t.Fatal(err)
	}
	m := bsmsg.New(false)
	for i, c := range cs {
		m.AddEntry(c, int32(len(cs)-i), typ, false)
	}
	if err := m.ToNetV1(s); err != nil {
		t.Fatal(err)
	}
	if interval == 0 {
		return
	}
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				s.Reset()
				return
			case <-tick.C:
				if m.ToNetV1(s) != nil {
					return
				}
			}
		}
	}()
}

// nonReader is an attacker that accepts the seed's bitswap streams and never
// reads from them.
func nonReader(ctx context.Context, t *testing.T, n *mesh.Node) host.Host {
	t.Helper()
	h := attacker(t)
	for _, p := range bitswapProtocols {
		h.SetStreamHandler(p, func(s network.Stream) {
			<-ctx.Done()
			s.Reset()
		})
	}
	connectTo(ctx, t, h, n)
	return h
}

// TestFaultNonReadingPeer replays attack 1 of issue 11: peers ask the seed
// for blocks and never read the replies. boxo's server writes each block in
// one of its workers with a deadline of about 86 s per 1 MiB; with boxo's 8
// workers one such peer stopped the seed serving anyone. The fix: a seed
// runs 32 workers, at most 4 sends per peer at once, and a deadline per send
// (2 s + size at 128 KiB/s) after which the peer is limited to one send at a
// time, then disconnected. Three non-reading peers that keep asking (12
// sends stuck) leave the honest fetch within 2x its baseline, all from the
// seed, the seed not penalised; and the seed cuts them within two
// deadlines.
func TestFaultNonReadingPeer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := newBed(t, 2, nil)
	base := b.baseline(ctx, t, "a1.bin")
	heap0 := liveHeapMiB()

	attackCtx, stop := context.WithCancel(ctx)
	defer stop()
	a0, _ := b.m.Lookup("a0.bin")
	leaves := leafCids(t, a0)
	var attackers []host.Host
	for range 3 {
		h := nonReader(attackCtx, t, b.seed)
		sendWants(attackCtx, t, h, b.seed, leaves, bspb.Message_Wantlist_Block, time.Second)
		attackers = append(attackers, h)
	}
	time.Sleep(500 * time.Millisecond) // the seed's workers take the attackers' blocks

	d, st, err := b.fetch(ctx, b.app, "a1.bin")
	if err != nil {
		t.Fatalf("honest fetch under attack: %v", err)
	}
	t.Logf("honest fetch: baseline %v, under attack %v (%.1fx)", base, d, float64(d)/float64(base))
	if limit := max(2*base, base+time.Second); d > limit {
		t.Errorf("honest fetch under attack took %v, want at most %v (baseline %v)", d, limit, base)
	}
	b.checkHonest(t, b.app, st)

	// Each attacker is cut when a send begun on probation misses its
	// deadline too: within two deadlines of a 1 MiB block.
	deadline := time.Now().Add(25 * time.Second)
	for _, h := range attackers {
		for b.seed.Host().Network().Connectedness(h.ID()) == network.Connected {
			if time.Now().After(deadline) {
				t.Fatalf("the seed still serves non-reading peer %s", h.ID())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	heap1 := liveHeapMiB()
	t.Logf("live heap: %.0f MiB before the attack, %.0f MiB after", heap0, heap1)
	// Bound: the 32 blocks the attackers were sent (32 MiB) and what the
	// honest fetch keeps, with room for the collector.
	if heap1-heap0 > 96 {
		t.Errorf("live heap grew by %.0f MiB, want at most 96", heap1-heap0)
	}
}
