package fetch_test

import (
	"context"
	"io"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// TestLeafAskedOfServingHolder: bitswap's session gives each want-block to
// one of the peers that said HAVE, and sticks to it. Here the seed serving
// the fetch (it served this node last, so the fetch's first leaf is asked
// of it directly) holds the first 3 of 6 leaves when it is asked (it
// answers DONT_HAVE for the rest), so the session asks a holder that said
// HAVE, has served this node before and sits on every want-block, as an
// app at its serving cap does, for the last 3 (and may for the others).
// The seed then has them and says HAVE. The leaf the reader waits on is asked of the seed directly, at the
// top priority, once the reader has waited on it as long as peers get for
// a leaf (peerHedges), so every leaf comes from the seed well before the
// re-ask of a stuck leaf (StuckAfter, 3 s); without that each of the last
// leaves waited for it.
func TestLeafAskedOfServingHolder(t *testing.T) {
	warm, warmBlk := smallAsset(t, 72)
	seedWarm, seedWarmBlk := smallAsset(t, 74)
	a := makeAsset(t, 73, 6*MiB)
	leaves := leafBlocks(t, a)
	if len(leaves) != 6 {
		t.Fatalf("%d leaves, want 6", len(leaves))
	}
	sitter := newScripted(t, append(leaves, warmBlk)...)
	sitter.withhold = func(c cid.Cid) bool { return !c.Equals(warmBlk.Cid()) }
	seed := newScripted(t, append(leaves[:3:3], seedWarmBlk)...)
	cl := newNode(t, fetch.Config{Providers: providers{
		warm.t.Cid:     {sitter.info()},
		seedWarm.t.Cid: {seed.info()},
		a.t.Cid:        {seed.info(), sitter.info()},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl.connectScripted(ctx, t, seed, sitter)
	cl.fetchWhole(t, warm.t, warm.data)         // the sitter is trusted
	cl.fetchWhole(t, seedWarm.t, seedWarm.data) // the seed has served this node: asked first

	r, err := cl.f.Open(ctx, a.t)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go seedGets(ctx, seed, sitter, cl, leaves[3:])
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	checkBytes(t, got, a.data)
	st := r.Stats()
	t.Logf("peers %v in %v", st.Peers, st.TTLB)
	if st.Peers[seed.h.ID()] != int64(len(a.data)) {
		t.Errorf("Stats.Peers = %v, want every byte from the seed", st.Peers)
	}
	if st.TTLB >= fetch.StuckAfter {
		t.Errorf("the fetch took %v, want under %v: the leaves the sitter sat on waited to be asked again", st.TTLB, fetch.StuckAfter)
	}
}

// seedGets waits until the sitter has been asked for the blocks bs, then
// gives them to the seed, which tells cl it has them.
func seedGets(ctx context.Context, seed, sitter *scripted, cl *node, bs []blocks.Block) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for _, b := range bs {
		for !sitter.askedBlock(b.Cid()) {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}
	have := bsmsg.New(false)
	seed.mu.Lock()
	for _, b := range bs {
		seed.blocks[b.Cid()] = b
		have.AddHave(b.Cid())
	}
	seed.mu.Unlock()
	send(seed.h, cl.h.ID(), have)
}

// leafBlocks returns a's leaves as blocks, in file order.
func leafBlocks(t testing.TB, a asset) []blocks.Block {
	t.Helper()
	ls, err := store.Leaves(context.Background(), nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	bs := make([]blocks.Block, len(ls))
	for i, l := range ls {
		b, err := blocks.NewBlockWithCid(a.data[l.Offset:l.Offset+l.Size], l.Cid)
		if err != nil {
			t.Fatal(err)
		}
		bs[i] = b
	}
	return bs
}

// TestPriorityOrderNotSkipped: a holder serving this node sends a fetch's
// leaves last first, one each 300 ms (a holder serves each peer's wants by
// the priorities they had when asked, and leaves asked later nearer the
// reader go before one asked long ago). That is no sign that it dropped the
// leaf the reader waits on, so the origin, there to hedge, waits the
// holder's full hedge time and takes nothing. Counted as skipped (a later
// leaf from a peer asked for the reader's leaf before: the rule until
// 2026-12-04), the origin took the reader's leaf 200 ms after the first
// later leaf came.
func TestPriorityOrderNotSkipped(t *testing.T) {
	warm, warmBlk := smallAsset(t, 75)
	a := makeAsset(t, 76, 6*MiB)
	seed := newScripted(t, append(leafBlocks(t, a), warmBlk)...)
	o := newOrigin(t, a.data)
	cl := newNode(t, fetch.Config{Providers: providers{warm.t.Cid: {seed.info()}, a.t.Cid: {seed.info()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.h.Connect(ctx, seed.info()); err != nil {
		t.Fatal(err)
	}
	cl.fetchWhole(t, warm.t, warm.data) // the seed serves this node
	seed.pace, seed.reverse = 300*time.Millisecond, true

	tg := a.t
	tg.URL = o.URL
	st := cl.fetchWhole(t, tg, a.data)
	t.Logf("peers %v, origin %d bytes in %d requests, took %v", st.Peers, o.sent.Load(), o.reqs.Load(), st.TTLB)
	if n := o.reqs.Load(); n > 0 {
		t.Errorf("the origin was asked for %d leaves while the seed sent the fetch's leaves last first, one each 300 ms", n)
	}
}

// TestOneLeafAskedOfHolderThatServed: a one-leaf file's block is asked
// first of a holder that served this node last and sits on it, as an app
// at its serving cap does; the session asks it too (its HAVE comes first).
// No holder has sent this fetch a leaf, so once the reader has waited as
// long as peers get for a leaf, the block is asked of the holder that has
// delivered this node the most blocks lately, the seed (guard.deliveries).
// Without that no block came (the session's want-block stayed with the
// sitter) and, with no origin, the fetch failed after StallTimeout; with
// one, the default demo's apps took such photos from it after 1.2 s.
func TestOneLeafAskedOfHolderThatServed(t *testing.T) {
	var seedHolds []blocks.Block
	var seedServed []asset
	for i := range 3 {
		a, b := smallAsset(t, uint64(80+i))
		seedHolds, seedServed = append(seedHolds, b), append(seedServed, a)
	}
	warm, warmBlk := smallAsset(t, 84)
	x, xBlk := smallAsset(t, 85)
	sitter := newScripted(t, warmBlk, xBlk)
	sitter.withhold = func(c cid.Cid) bool { return c.Equals(xBlk.Cid()) }
	seed := newScripted(t, append(seedHolds, xBlk)...)
	seed.haveDelay = 100 * time.Millisecond // the sitter's HAVE comes first
	provs := providers{warm.t.Cid: {sitter.info()}, x.t.Cid: {sitter.info(), seed.info()}}
	for _, a := range seedServed {
		provs[a.t.Cid] = []peer.AddrInfo{seed.info()}
	}
	cl := newNode(t, fetch.Config{Providers: provs})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl.connectScripted(ctx, t, seed, sitter)
	for _, a := range seedServed {
		cl.fetchWhole(t, a.t, a.data) // the seed has served this node most
	}
	cl.fetchWhole(t, warm.t, warm.data) // and the sitter last: asked first

	st := cl.fetchWhole(t, x.t, x.data)
	t.Logf("peers %v in %v", st.Peers, st.TTLB)
	if !sitter.askedBlock(xBlk.Cid()) {
		t.Fatal("the sitter was not asked for the block: the test shows nothing")
	}
	if st.Peers[seed.h.ID()] != int64(len(x.data)) {
		t.Errorf("Stats.Peers = %v, want the block from the seed", st.Peers)
	}
	if st.TTLB >= fetch.StuckAfter {
		t.Errorf("the fetch took %v, want under %v: the block the sitter sat on was not asked of the seed", st.TTLB, fetch.StuckAfter)
	}
}

// TestLeafAskedAgainNotCancelled: a holder serving this fetch sits on the
// want-blocks of the leaf the reader waits on for 1.5 s, as one that
// dropped them does; the peer hedge asks it of the holder directly, then
// the re-ask of a stuck leaf on a new session. The holder then has the
// leaf asked of it anew, and is sent no cancel of it before it sends it:
// the direct want that asked it before is ended by the re-ask, and its
// cancel, on a stream of its own, could reach the holder after the new
// want and take it out (a holder heeds cancels that come after it took a
// want: cancels.go). Before, that cancel went out, and a fetch from one
// slow holder beside a changed origin failed after StallTimeout one time
// in 20 (TestChangedOriginPeersServe).
func TestLeafAskedAgainNotCancelled(t *testing.T) {
	a := makeAsset(t, 77, 3*MiB)
	leaves := leafBlocks(t, a)
	sat := leaves[1].Cid()
	h := newScripted(t, leaves...)
	h.sitFor = map[cid.Cid]time.Duration{sat: 1500 * time.Millisecond}
	h.blockDelay = 200 * time.Millisecond // a cancel sent with the new want comes first
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {h.info()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl.connectScripted(ctx, t, h)
	st := cl.fetchWhole(t, a.t, a.data)
	t.Logf("peers %v in %v", st.Peers, st.TTLB)
	h.mu.Lock()
	n, sent := h.cancelsBefore[sat], h.sitDone[sat]
	h.mu.Unlock()
	if !sent || n != 0 {
		t.Errorf("the holder sent the leaf it sat on: %v, after %d cancels of it; want sent, after none", sent, n)
	}
	if st.Peers[h.h.ID()] != int64(len(a.data)) {
		t.Errorf("Stats.Peers = %v, want every byte from the holder", st.Peers)
	}
}
