package fetch

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestHaveAnswersBacklog: one HAVE message in flight per peer; what is
// asked meanwhile goes in the next, at most haveBacklog of it, and the
// rest of a want list is left to boxo. Wants of blocks not held and
// want-blocks are left to boxo too.
func TestHaveAnswersBacklog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		held := func(_ context.Context, c cid.Cid) (bool, error) { return c != testLeaf(t, "0"), nil }
		release := make(chan struct{})
		var mu sync.Mutex
		var sent []int
		send := func(ctx context.Context, _ peer.ID, m bsmsg.BitSwapMessage) error {
			mu.Lock()
			sent = append(sent, len(m.Haves()))
			mu.Unlock()
			<-release
			return nil
		}
		h := newHaveAnswers(ctx, held, send)
		want := func(from, to int, typ bspb.Message_Wantlist_WantType) bsmsg.BitSwapMessage {
			m := bsmsg.New(false)
			for i := from; i < to; i++ {
				m.AddEntry(testLeaf(t, strconv.Itoa(i)), 1, typ, true)
			}
			return m
		}
		if left := h.answer("p", want(0, 3, bspb.Message_Wantlist_Have)); len(left.Wantlist()) != 1 {
			t.Errorf("first want list: %d wants left to boxo, want 1 (the block not held)", len(left.Wantlist()))
		}
		if left := h.answer("p", want(3, 5, bspb.Message_Wantlist_Block)); len(left.Wantlist()) != 2 {
			t.Errorf("want-blocks: %d left to boxo, want 2", len(left.Wantlist()))
		}
		synctest.Wait() // the first HAVEs are being sent
		if left := h.answer("p", want(10, 10+haveBacklog+5, bspb.Message_Wantlist_Have)); len(left.Wantlist()) != 5 {
			t.Errorf("past the backlog: %d left to boxo, want 5", len(left.Wantlist()))
		}
		release <- struct{}{}
		release <- struct{}{}
		synctest.Wait()
		h.close()
		if len(sent) != 2 || sent[0] != 2 || sent[1] != haveBacklog {
			t.Errorf("HAVE messages = %v, want [2 %d]", sent, haveBacklog)
		}
	})
}
