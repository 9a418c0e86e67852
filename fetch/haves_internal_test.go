package fetch

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

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

// TestHaveOfArrived: the want-haves of blocks not held are noted and,
// when one arrives, answered with a HAVE to the peers that still want it:
// not to one that cancelled it, asked the block instead, sent a full want
// list without it, or went; not for a want older than waitingFor; and at
// most waitingPerPeer a peer, room made from the expired first.
func TestHaveOfArrived(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		none := func(context.Context, cid.Cid) (bool, error) { return false, nil }
		var mu sync.Mutex
		var sent []string // "peer leaf"
		send := func(_ context.Context, p peer.ID, m bsmsg.BitSwapMessage) error {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range m.Haves() {
				for i := range 2*waitingPerPeer + 10 {
					if c == testLeaf(t, strconv.Itoa(i)) {
						sent = append(sent, string(p)+" "+strconv.Itoa(i))
					}
				}
			}
			return nil
		}
		h := newHaveAnswers(ctx, none, send)
		defer h.close()
		ask := func(p peer.ID, full bool, typ bspb.Message_Wantlist_WantType, cancel bool, leaves ...int) {
			m := bsmsg.New(full)
			for _, i := range leaves {
				if cancel {
					m.Cancel(testLeaf(t, strconv.Itoa(i)))
				} else {
					m.AddEntry(testLeaf(t, strconv.Itoa(i)), 1, typ, true)
				}
			}
			if left := h.answer(p, m); len(left.Wantlist()) != len(leaves) {
				t.Fatalf("%d wants left to boxo, want all %d", len(left.Wantlist()), len(leaves))
			}
		}
		check := func(name string, leaf int, want ...string) {
			t.Helper()
			mu.Lock()
			sent = nil
			mu.Unlock()
			h.arrived(testLeaf(t, strconv.Itoa(leaf)))
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			slices.Sort(sent)
			if !slices.Equal(sent, want) {
				t.Errorf("%s: HAVEs %v, want %v", name, sent, want)
			}
		}
		have, block := bspb.Message_Wantlist_Have, bspb.Message_Wantlist_Block
		ask("p", false, have, false, 1, 2, 3)
		ask("q", false, have, false, 1, 2)
		ask("p", false, have, true, 1) // cancels
		check("one cancelled", 1, "q 1")
		ask("q", false, block, false, 2) // the block, not the HAVE
		check("one asked the block", 2, "p 2")
		check("answered once", 2)
		ask("p", false, have, false, 4)
		ask("p", true, have, false, 5) // replaces p's list: 3 and 4 gone
		check("a full list", 4)
		check("a full list", 5, "p 5")
		ask("q", false, have, false, 6)
		h.gone("q")
		check("gone", 6)
		ask("p", false, have, false, 7)
		time.Sleep(waitingFor)
		check("expired", 7)

		for i := 10; i < 10+waitingPerPeer+1; i++ {
			ask("r", false, have, false, i)
		}
		check("past the bound", 10+waitingPerPeer)
		check("within it", 10, "r 10")
		ask("r", false, have, false, 10+waitingPerPeer+1) // at the bound again
		time.Sleep(waitingFor)
		ask("r", false, have, false, 9)
		check("room from the expired", 9, "r 9")
	})
}
