package fetch_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// listen makes h take bitswap messages, handing each to got while it has
// room.
func listen(h host.Host, got chan<- bsmsg.BitSwapMessage) {
	onMessages(h, func(m bsmsg.BitSwapMessage) {
		select {
		case got <- m:
		default: // the test has what it needs
		}
	})
}

// TestHaveNotBehindBlocks: a holder whose serving workers all wait on its
// serving cap, each with a block for a greedy peer to read, still answers
// another peer's want-have of a block it holds, at once. boxo's server
// queues the HAVE behind the blocks: without the guard's own answer
// (haves.go) it came when a worker was free, here never.
func TestHaveNotBehindBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, leaves := busyHolder(ctx, t)
	asker, answers := connectedAsker(ctx, t, holder)
	last := leaves[len(leaves)-1].Cid
	m := bsmsg.New(false)
	m.AddEntry(last, 1, bspb.Message_Wantlist_Have, true)
	send(asker, holder.h.ID(), m)
	waitMessage(ctx, t, answers, func(m bsmsg.BitSwapMessage) bool { return slices.ContainsFunc(m.Haves(), last.Equals) })
}

// TestHaveOfArrivedBlock: a peer asked a busy holder (as in
// TestHaveNotBehindBlocks) HAVE of a block it lacked; when the holder
// fetches the block, the peer hears HAVE at once. boxo's server queues
// that HAVE behind the blocks too: without the guard's (haves.go,
// arrived) it came when a worker was free, here never.
func TestHaveOfArrivedBlock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, _ := busyHolder(ctx, t)
	b := makeAsset(t, 8, 100<<10) // one leaf, from the origin
	asker, answers := connectedAsker(ctx, t, holder)
	noted := make(chan struct{})
	var once sync.Once
	holder.f.OnWantNoted(func() { once.Do(func() { close(noted) }) })
	m := bsmsg.New(false)
	m.AddEntry(b.t.Cid, 1, bspb.Message_Wantlist_Have, true)
	send(asker, holder.h.ID(), m)
	select {
	case <-noted: // the holder lacks the block as it is asked
	case <-ctx.Done():
		t.Fatal("the want-have did not arrive")
	}
	o := newOrigin(t, b.data)
	tg := b.t
	tg.URL = o.URL
	holder.fetchWhole(t, tg, b.data)
	waitMessage(ctx, t, answers, func(m bsmsg.BitSwapMessage) bool { return slices.ContainsFunc(m.Haves(), b.t.Cid.Equals) })
}

// connectedAsker returns a host connected to holder and the bitswap
// messages it gets.
func connectedAsker(ctx context.Context, t *testing.T, holder *node) (host.Host, <-chan bsmsg.BitSwapMessage) {
	t.Helper()
	asker := newHost(t)
	answers := make(chan bsmsg.BitSwapMessage, 16)
	listen(asker, answers)
	if err := asker.Connect(ctx, holder.info()); err != nil {
		t.Fatal(err)
	}
	return asker, answers
}

// busyHolder returns a node holding a 12 MiB asset whose serving workers
// all wait on its serving cap (1 byte per second), each with a block for a
// greedy peer to read, and the asset's leaves: greedy peers want every leaf
// but the last, the first block spends the cap's burst.
func busyHolder(ctx context.Context, t *testing.T) (*node, []store.Leaf) {
	t.Helper()
	holder := newNode(t, fetch.Config{ServeBytesPerSecond: 1, ServeConcurrency: 1})
	a := makeAsset(t, 7, 12*MiB)
	holder.hold(t, a)
	leaves, err := store.Leaves(ctx, nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	blocksIn := make(chan bsmsg.BitSwapMessage, 1)
	for range 8 {
		g := newHost(t)
		listen(g, blocksIn)
		if err := g.Connect(ctx, holder.info()); err != nil {
			t.Fatal(err)
		}
		m := bsmsg.New(true)
		for i, l := range leaves[:len(leaves)-1] {
			m.AddEntry(l.Cid, int32(len(leaves)-i), bspb.Message_Wantlist_Block, false)
		}
		send(g, holder.h.ID(), m)
	}
	waitMessage(ctx, t, blocksIn, func(m bsmsg.BitSwapMessage) bool { return len(m.Blocks()) > 0 })
	return holder, leaves
}

// waitMessage waits for a message from in that ok accepts.
func waitMessage(ctx context.Context, t *testing.T, in <-chan bsmsg.BitSwapMessage, ok func(bsmsg.BitSwapMessage) bool) {
	t.Helper()
	for {
		select {
		case m := <-in:
			if ok(m) {
				return
			}
		case <-ctx.Done():
			t.Fatal("no such message before the deadline")
		}
	}
}
