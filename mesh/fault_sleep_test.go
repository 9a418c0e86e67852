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
)

// TestFaultSleptPeerServedWhenBack: a laptop asks a seed for blocks and
// sleeps before reading them (the lid closed during a download). The seed
// misses its send deadlines as with a peer that reads nothing, and cuts
// it. When the laptop wakes and redials, the seed serves it again at once
// (one send at a time, on probation): before, it refused the laptop's
// requests for the rest of its one-minute cut, so that every fetch of the
// app's first minute back went to the origin.
func TestFaultSleptPeerServedWhenBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	b := newBed(t, 1, nil)
	a0, _ := b.m.Lookup("a0.bin")
	leaves := leafCids(t, a0)

	// Asleep: the laptop's streams are not read.
	asleep, wake := context.WithCancel(ctx)
	defer wake()
	h := nonReader(asleep, t, b.seed)
	sendWants(asleep, t, h, b.seed, leaves, bspb.Message_Wantlist_Block, 0)
	start := time.Now()
	for b.seed.Host().Network().Connectedness(h.ID()) == network.Connected {
		if time.Since(start) > 40*time.Second {
			t.Fatal("the seed never cut the sleeping peer")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the seed cut the sleeping peer after %v", time.Since(start).Round(time.Millisecond))

	// Awake: it reads, redials and asks again.
	wake()
	got := readBlocks(ctx, h)
	connectTo(ctx, t, h, b.seed)
	sendWants(ctx, t, h, b.seed, leaves[:1], bspb.Message_Wantlist_Block, 0)
	woke := time.Now()
	select {
	case c := <-got:
		if !c.Equals(leaves[0]) {
			t.Fatalf("got block %s, want %s", c, leaves[0])
		}
		t.Logf("first block %v after the redial", time.Since(woke).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatalf("no block 10 s after the peer came back (the seed still refuses it)")
	}
}

// readBlocks makes h read every bitswap message it is sent and returns a
// channel of the CIDs of their blocks.
func readBlocks(ctx context.Context, h host.Host) <-chan cid.Cid {
	got := make(chan cid.Cid, 64)
	for _, p := range bitswapProtocols {
		h.SetStreamHandler(p, func(s network.Stream) {
			defer s.Reset()
			for {
				m, _, err := bsmsg.FromNet(s)
				if err != nil {
					return
				}
				for _, blk := range m.Blocks() {
					select {
					case got <- blk.Cid():
					case <-ctx.Done():
						return
					}
				}
			}
		})
	}
	return got
}
