package fetch_test

import (
	"context"
	"math"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// TestUrgentWantNoted: a holder notes the want-blocks a peer sends with
// the top priority (a reader's next leaf), to serve them ahead of its
// serving cap's queue (TestServeUrgentAhead), and not the others. The
// holder is idle, so both blocks come; the second is the event that both
// wants have arrived.
func TestUrgentWantNoted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder := newNode(t, fetch.Config{})
	a := makeAsset(t, 9, 3*MiB)
	holder.hold(t, a)
	leaves, err := store.Leaves(ctx, nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	asker, answers := connectedAsker(ctx, t, holder)
	urgent, plain := leaves[0].Cid, leaves[1].Cid
	m := bsmsg.New(false)
	m.AddEntry(urgent, math.MaxInt32, bspb.Message_Wantlist_Block, true)
	send(asker, holder.h.ID(), m)
	m = bsmsg.New(false)
	m.AddEntry(plain, math.MaxInt32-1, bspb.Message_Wantlist_Block, true)
	send(asker, holder.h.ID(), m)
	got := 0
	waitMessage(ctx, t, answers, func(m bsmsg.BitSwapMessage) bool {
		got += len(m.Blocks())
		return got == 2
	})
	if !holder.f.WantedUrgently(urgent) {
		t.Error("the top-priority want-block was not noted as urgent")
	}
	if holder.f.WantedUrgently(plain) {
		t.Error("a lower-priority want-block was noted as urgent")
	}
}
