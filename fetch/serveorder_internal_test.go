package fetch

import (
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	bsserver "github.com/ipfs/boxo/bitswap/server"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// wantsOf is a wantlist message from a peer: want-blocks of cs, the first
// with priority prio, the next one less, and so on.
func wantsOf(prio int32, cs ...cid.Cid) bsmsg.BitSwapMessage {
	m := bsmsg.New(false)
	for i, c := range cs {
		m.AddEntry(c, prio-int32(i), bspb.Message_Wantlist_Block, true)
	}
	return m
}

func blockTask(p peer.ID, c cid.Cid) *bsserver.TaskInfo {
	return &bsserver.TaskInfo{Peer: p, Cid: c, IsWantBlock: true, HaveBlock: true, BlockSize: 1 << 20}
}

// sentOf is a message carrying bs.
func sentOf(bs ...blocks.Block) bsmsg.BitSwapMessage {
	m := bsmsg.New(false)
	for _, b := range bs {
		m.AddBlock(b)
	}
	return m
}

func testBlocks(n int) []blocks.Block {
	bs := make([]blocks.Block, n)
	for i := range bs {
		bs[i] = blocks.NewBlock([]byte{byte(i), 'b', 'l', 'o', 'c', 'k'})
	}
	return bs
}

// TestServeOrderInTurn: between peers the one sent the fewest bytes lately,
// those in flight included, comes first, whatever the priorities or how
// many requests each has; within a peer, the priorities its wantlist gave.
// Sent bytes stop counting as time passes.
func TestServeOrderInTurn(t *testing.T) {
	bs := testBlocks(4)
	greedy, modest := peer.ID("greedy"), peer.ID("modest")
	o := newServeOrder(0)
	o.note(greedy, wantsOf(100, bs[0].Cid(), bs[1].Cid(), bs[2].Cid()))
	o.note(modest, wantsOf(1, bs[3].Cid()))
	g0, g1, m3 := blockTask(greedy, bs[0].Cid()), blockTask(greedy, bs[1].Cid()), blockTask(modest, bs[3].Cid())

	if !o.less(g0, g1) || o.less(g1, g0) {
		t.Error("within a peer, the higher priority does not come first")
	}
	if !o.less(g0, m3) {
		t.Error("neither served yet: the higher priority does not come first")
	}
	now := time.Now()
	o.reading(bs[0].Cid(), 1<<20, now)
	if !o.less(m3, g1) || o.less(g1, m3) {
		t.Error("a block in flight to the greedy peer does not put the other first")
	}
	o.sent(greedy, sentOf(bs[0]), 1<<20, now)
	if !o.less(m3, g1) {
		t.Error("a block just sent to the greedy peer does not put the other first")
	}
	if o.peers[greedy].flying != 0 {
		t.Errorf("%d bytes still in flight after the send", o.peers[greedy].flying)
	}
	if sp := o.peers[greedy]; sp.load(now.Add(30*serveMemory)) > 1 {
		t.Errorf("bytes sent long ago still count: load %.0f", sp.load(now.Add(30*serveMemory)))
	}
}

// TestServeOrderWaitingFirst: a block a reader waits on (topPriority) is
// served before another peer's read-ahead however much more its peer was
// sent lately; between two such blocks, and between two read-aheads, the
// lighter load goes first.
func TestServeOrderWaitingFirst(t *testing.T) {
	bs := testBlocks(5)
	heavy, light := peer.ID("heavy"), peer.ID("light")
	o := newServeOrder(0)
	o.note(heavy, wantsOf(topPriority, bs[0].Cid()))
	o.note(heavy, wantsOf(5, bs[1].Cid()))
	o.note(light, wantsOf(topPriority-1, bs[2].Cid()))
	o.note(light, wantsOf(topPriority, bs[3].Cid()))
	now := time.Now()
	o.sent(heavy, sentOf(bs[4]), 64<<20, now) // a block it no longer wants
	h0, h1 := blockTask(heavy, bs[0].Cid()), blockTask(heavy, bs[1].Cid())
	l2, l3 := blockTask(light, bs[2].Cid()), blockTask(light, bs[3].Cid())

	if !o.less(h0, l2) || o.less(l2, h0) {
		t.Error("the heavy peer's waited block does not go before the light peer's read-ahead")
	}
	if !o.less(l3, h0) || o.less(h0, l3) {
		t.Error("between two waited blocks the lighter load does not go first")
	}
	if !o.less(l2, h1) {
		t.Error("between two read-aheads the lighter load does not go first")
	}
}

// TestServeOrderMaxedLast: a peer with the most bytes the server keeps
// under way for one peer goes after the others, its waited block too (boxo
// takes nothing from it, and would take nothing from anyone while it came
// first), and a read of a block both want is put to the other; once a send
// lands, it is back in turn.
func TestServeOrderMaxedLast(t *testing.T) {
	bs := testBlocks(4)
	stuck, other := peer.ID("stuck"), peer.ID("other")
	o := newServeOrder(2 << 20)
	o.note(stuck, wantsOf(topPriority, bs[0].Cid(), bs[1].Cid(), bs[2].Cid()))
	o.note(other, wantsOf(5, bs[2].Cid(), bs[3].Cid()))
	o.sent(other, sentOf(testBlocks(5)[4]), 8<<20, time.Now()) // served lately: the heavier
	now := time.Now()
	o.reading(bs[0].Cid(), 1<<20, now)
	o.reading(bs[1].Cid(), 1<<20, now)
	s2, o3 := blockTask(stuck, bs[2].Cid()), blockTask(other, bs[3].Cid())
	if !o.less(o3, s2) || o.less(s2, o3) {
		t.Error("a peer with 2 MiB under way does not go after the other")
	}
	o.reading(bs[2].Cid(), 1<<20, now)
	if _, ok := o.peers[other].inflight[bs[2].Cid()]; !ok {
		t.Error("a read of a block both want was not put to the peer that is not maxed")
	}
	o.sent(stuck, sentOf(bs[0]), 1<<20, now)
	if o.peers[stuck].maxed(o.maxOut) {
		t.Errorf("still maxed with %d bytes in flight", o.peers[stuck].flying)
	}
}

// TestServeOrderReadFor: a read is put in flight to the peer first in the
// order among those that want the block; a send to another moves it there;
// a read that fails, or a block cancelled and not sent, is in flight to
// no one.
func TestServeOrderReadFor(t *testing.T) {
	bs := testBlocks(3)
	a, b := peer.ID("a"), peer.ID("b")
	o := newServeOrder(0)
	o.note(a, wantsOf(10, bs[0].Cid(), bs[1].Cid()))
	o.note(b, wantsOf(10, bs[0].Cid(), bs[1].Cid(), bs[2].Cid()))
	now := time.Now()
	o.sent(a, sentOf(bs[2]), 1<<20, now) // a was served lately
	o.reading(bs[0].Cid(), 100, now)
	if o.peers[b].flying != 100 || o.peers[a].flying != 0 {
		t.Fatalf("read put to the wrong peer: a %d, b %d bytes in flight", o.peers[a].flying, o.peers[b].flying)
	}
	o.sent(a, sentOf(bs[0]), 100, now) // it was a's after all
	if o.peers[b].flying != 0 || o.peers[a].flying != 0 {
		t.Errorf("after the send to a: a %d, b %d bytes in flight", o.peers[a].flying, o.peers[b].flying)
	}
	o.reading(bs[1].Cid(), 100, now)
	o.unread(bs[1].Cid())
	o.reading(bs[1].Cid(), 100, now)
	o.sent(b, sentOf(bs[1]), 0, now) // cancelled meanwhile: nothing sent
	for _, p := range []peer.ID{a, b} {
		if n := o.peers[p].flying; n != 0 {
			t.Errorf("%s: %d bytes in flight after a failed read and a send of nothing", p, n)
		}
	}
	o.forget(a)
	if _, ok := o.peers[a]; ok {
		t.Error("a peer forgotten is still known")
	}
}

// TestServeOrderBounds: a peer's wants beyond maxOrderWants are not
// remembered (boxo queues no more), a cancel forgets one, and a read no
// peer wants puts nothing in flight.
func TestServeOrderBounds(t *testing.T) {
	p := peer.ID("p")
	o := newServeOrder(0)
	m := bsmsg.New(false)
	for i := range maxOrderWants + 10 {
		m.AddEntry(blocks.NewBlock([]byte{byte(i), byte(i >> 8), 'x'}).Cid(), 1, bspb.Message_Wantlist_Block, true)
	}
	o.note(p, m)
	if n := len(o.peers[p].wants); n != maxOrderWants {
		t.Errorf("%d wants remembered, want %d", n, maxOrderWants)
	}
	first := m.Wantlist()[0].Cid
	c := bsmsg.New(false)
	c.Cancel(first)
	o.note(p, c)
	if _, ok := o.peers[p].wants[first]; ok {
		t.Error("a cancelled want is still remembered")
	}
	o.reading(blocks.NewBlock([]byte("nobody")).Cid(), 100, time.Now())
	if o.peers[p].flying != 0 {
		t.Error("a block nobody wants was put in flight")
	}
}
