package fetch_test

import (
	"context"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// TestServeEvenlyNoStarving: a holder at its serving cap, asked for 16
// blocks each by five peers, serves a sixth that was served before and now
// asks for one block, with the lowest priority, after the few blocks
// already read for sending, not after the others' queues (with the order
// reversed, after 64 of their 80 blocks). Boxo's order passes this too;
// see serveorder.go for the crowd where it did not serve evenly.
func TestServeEvenlyNoStarving(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	holder, a, ask := evenHolder(ctx, t, 21, 1)
	leaves, err := store.Leaves(ctx, nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	want := bsmsg.New(false)
	for i, l := range leaves {
		want.AddEntry(l.Cid, int32(100-i), bspb.Message_Wantlist_Block, true)
	}
	const greedyPeers = 5
	greedyBlocks := greedyAskers(ctx, t, holder, want, greedyPeers)
	// Counted from the ask, not from the wantlists: the blocks served
	// before the ask reached the holder say nothing of its order (under
	// -race on two loaded cores, 14 of them came before an ask that then
	// waited for none).
	start := greedyBlocks.Load()
	ask(1)
	before := greedyBlocks.Load() - start
	t.Logf("the one-block peer's block came after %d of the others' %d (%d before it asked)", before, greedyPeers*len(leaves), start)
	if before > 12 {
		t.Errorf("the one-block peer waited for %d of the others' blocks; 4 workers' reads and a few more expected", before)
	}
}

// TestServeEvenlyBesideFetches: a holder at its serving cap, six fetches
// of a 16 MiB asset from it under way, serves a peer that has been served
// before and now asks for one block within a few blocks' time (with the
// order reversed, after 90 MiB).
func TestServeEvenlyBesideFetches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	holder, a, ask := evenHolder(ctx, t, 23, math.MaxInt32)
	var wg sync.WaitGroup
	started := make(chan struct{}, 6)
	for range 6 {
		cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {holder.info()}}})
		r := cl.open(t, a.t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			if _, err := io.ReadFull(r, make([]byte, MiB)); err == nil {
				started <- struct{}{}
			}
			io.Copy(io.Discard, r)
		}()
	}
	defer wg.Wait()
	for range 6 { // every fetch under way
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("the fetches did not start")
		}
	}
	before := holder.f.Stats().ServedBytes
	ask(1)
	others := (holder.f.Stats().ServedBytes - before) / MiB
	t.Logf("the one-block peer's block came after %d MiB sent to the fetches", others)
	if others > 12 {
		t.Errorf("the one-block peer waited for %d MiB sent to others", others)
	}
}

// TestServeEvenlyWaitingFirst: a holder at its serving cap, having just
// sent a peer 16 MiB, then asked for 16 blocks each by five peers it has
// sent nothing lately, serves that peer's block with the top priority (a
// reader waits on it) after the few blocks already read for sending. By
// load alone it came after the others had caught up with what it was sent
// (at a seed serving 20 apps at its cap, an app near the end of a file
// waited 1.6 s for its next leaf, which its reader took from the origin).
func TestServeEvenlyWaitingFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	holder, a, _ := evenHolder(ctx, t, 25, math.MaxInt32)
	leaves, err := store.Leaves(ctx, nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	next := makeAsset(t, 27, MiB) // what the heavy peer's reader waits on
	holder.hold(t, next)
	own, err := store.Leaves(ctx, nodesGetter(next.t), next.t.Cid, next.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	want := bsmsg.New(false)
	for i, l := range leaves {
		want.AddEntry(l.Cid, int32(100-i), bspb.Message_Wantlist_Block, true)
	}
	heavy, answers := connectedAsker(ctx, t, holder)
	send(heavy, holder.h.ID(), want)
	for got := 0; got < len(leaves); {
		waitMessage(ctx, t, answers, func(m bsmsg.BitSwapMessage) bool {
			got += len(m.Blocks())
			return len(m.Blocks()) > 0
		})
	}
	const greedyPeers = 5
	greedyBlocks := greedyAskers(ctx, t, holder, want, greedyPeers)
	start := greedyBlocks.Load()
	m := bsmsg.New(false)
	m.AddEntry(own[0].Cid, math.MaxInt32, bspb.Message_Wantlist_Block, true)
	send(heavy, holder.h.ID(), m)
	waitMessage(ctx, t, answers, func(m bsmsg.BitSwapMessage) bool { return len(m.Blocks()) > 0 })
	before := greedyBlocks.Load() - start
	t.Logf("the waiting block came after %d of the others' %d (%d before it was asked)", before, greedyPeers*len(leaves), start)
	if before > 12 {
		t.Errorf("the waiting block came after %d of the others' blocks; 4 workers' reads and a few more expected", before)
	}
}

// greedyAskers connects n peers to holder, each sending it want, and
// returns once the holder has noted their wantlists; the count is of the
// blocks they have been sent.
func greedyAskers(ctx context.Context, t *testing.T, holder *node, want bsmsg.BitSwapMessage, n int) *atomic.Int64 {
	t.Helper()
	noted := make(chan struct{}, 64)
	holder.f.OnServeWants(func() {
		select {
		case noted <- struct{}{}:
		default: // the test has what it needs
		}
	})
	blocks := new(atomic.Int64)
	for range n {
		g := newHost(t)
		onMessages(g, func(m bsmsg.BitSwapMessage) { blocks.Add(int64(len(m.Blocks()))) })
		if err := g.Connect(ctx, holder.info()); err != nil {
			t.Fatal(err)
		}
		send(g, holder.h.ID(), want)
	}
	for range n { // one wantlist each
		select {
		case <-noted:
		case <-ctx.Done():
			t.Fatal("the holder did not note the wantlists")
		}
	}
	return blocks
}

// evenHolder is a holder serving evenly at 32 MiB/s (4 workers), holding a
// 16 MiB asset for the others and a 2 MiB one for the one-block peer, and
// that peer's ask: a want-block of the asset's leaf i with priority prio,
// which returns once the block has come. The peer has been served its
// first leaf already (boxo puts a peer it never served first), as an app
// that took a page's small files from the holder has.
func evenHolder(ctx context.Context, t *testing.T, seed uint64, prio int32) (holder *node, big asset, ask func(i int)) {
	t.Helper()
	holder = newNode(t, fetch.Config{ServeEvenly: true, ServeBytesPerSecond: 32 << 20, ServeBurst: 1 << 20, ServeConcurrency: 8})
	big, small := makeAsset(t, seed, 16*MiB), makeAsset(t, seed+1, 2*MiB)
	holder.hold(t, big)
	holder.hold(t, small)
	own, err := store.Leaves(ctx, nodesGetter(small.t), small.t.Cid, small.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	modest, answers := connectedAsker(ctx, t, holder)
	ask = func(i int) {
		m := bsmsg.New(false)
		m.AddEntry(own[i].Cid, prio, bspb.Message_Wantlist_Block, true)
		send(modest, holder.h.ID(), m)
		waitMessage(ctx, t, answers, func(m bsmsg.BitSwapMessage) bool { return len(m.Blocks()) > 0 })
	}
	ask(0)
	return holder, big, ask
}
