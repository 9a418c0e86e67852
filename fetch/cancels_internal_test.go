package fetch

import (
	"fmt"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestCancelBook: a block goes out unless its peer cancelled it within
// cancelFor and has not wanted it since; a cancel is used once, forgotten
// with the peer's connection, and past the bounds not noted.
func TestCancelBook(t *testing.T) {
	now := time.Unix(1000, 0)
	a, b := peer.ID("a"), peer.ID("b")
	blk := testBlock(t, []byte("leaf"))
	blockMsg := func() bsmsg.BitSwapMessage {
		m := bsmsg.New(false)
		m.AddBlock(blk)
		m.AddHave(testBlock(t, []byte("other")).Cid())
		return m
	}
	cancelMsg := func(bs ...blocks.Block) bsmsg.BitSwapMessage {
		m := bsmsg.New(false)
		for _, x := range bs {
			m.Cancel(x.Cid())
		}
		return m
	}
	wantMsg := bsmsg.New(false)
	wantMsg.AddEntry(blk.Cid(), 1, bspb.Message_Wantlist_Have, false)

	sent := func(cb *cancelBook, p peer.ID, at time.Time) bool {
		out, _ := cb.without(p, blockMsg(), at)
		if len(out.Haves()) != 1 {
			t.Fatal("the HAVE went with the block")
		}
		return len(out.Blocks()) == 1
	}
	for _, tc := range []struct {
		name string
		do   func(cb *cancelBook)
		to   peer.ID
		at   time.Duration
		want bool
	}{
		{"never cancelled", func(*cancelBook) {}, a, 0, true},
		{"cancelled", func(cb *cancelBook) { cb.note(a, cancelMsg(blk), now) }, a, 0, false},
		{"cancelled by another peer", func(cb *cancelBook) { cb.note(b, cancelMsg(blk), now) }, a, 0, true},
		{"wanted again", func(cb *cancelBook) { cb.note(a, cancelMsg(blk), now); cb.note(a, wantMsg, now) }, a, 0, true},
		{"cancelled long ago", func(cb *cancelBook) { cb.note(a, cancelMsg(blk), now) }, a, cancelFor + time.Second, true},
		{"disconnected since", func(cb *cancelBook) { cb.note(a, cancelMsg(blk), now); cb.gone(a) }, a, 0, true},
		{"dropped once", func(cb *cancelBook) { cb.note(a, cancelMsg(blk), now); cb.without(a, blockMsg(), now) }, a, 0, true},
		{"past the peer's bound", func(cb *cancelBook) {
			for i := range cancelPeerMax {
				cb.note(a, cancelMsg(testBlock(t, fmt.Appendf(nil, "x%d", i))), now)
			}
			cb.note(a, cancelMsg(blk), now)
		}, a, 0, true},
		{"room made by old cancels", func(cb *cancelBook) {
			for i := range cancelPeerMax {
				cb.note(a, cancelMsg(testBlock(t, fmt.Appendf(nil, "x%d", i))), now)
			}
			cb.note(a, cancelMsg(blk), now.Add(cancelFor+time.Second))
		}, a, cancelFor + time.Second, false},
	} {
		cb := newCancelBook()
		tc.do(cb)
		if got := sent(cb, tc.to, now.Add(tc.at)); got != tc.want {
			t.Errorf("%s: sent %v, want %v", tc.name, got, tc.want)
		}
		n := 0
		for _, cs := range cb.by {
			n += len(cs)
		}
		if n != cb.n {
			t.Errorf("%s: %d cancels noted, counted %d", tc.name, n, cb.n)
		}
	}
}
