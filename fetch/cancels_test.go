package fetch_test

import (
	"context"
	"slices"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// TestCancelledBlockNotSent: a holder at its serving cap does not send a
// block the asking peer cancelled while the block waited for the cap, nor
// count it as served. boxo's server had taken the block off its queue and
// sent it anyway: here the two leaves waiting when the cancel came (the
// server holds two 1 MiB blocks per peer), 2 MiB of upload for nothing. A
// block cancelled and wanted again is sent.
func TestCancelledBlockNotSent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder := newNode(t, fetch.Config{ServeBytesPerSecond: 2 * MiB, ServeBurst: MiB})
	a := makeAsset(t, 11, 5*MiB)
	holder.hold(t, a)
	leaves, err := store.Leaves(ctx, nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	asker, answers := connectedAsker(ctx, t, holder)
	want := func(cancel bool, is ...int) {
		m := bsmsg.New(false)
		for _, i := range is {
			if cancel {
				m.Cancel(leaves[i].Cid)
			} else {
				m.AddEntry(leaves[i].Cid, int32(100-i), bspb.Message_Wantlist_Block, false)
			}
		}
		send(asker, holder.h.ID(), m)
	}
	var got []cid.Cid
	await := func(i int) {
		t.Helper()
		waitMessage(ctx, t, answers, func(m bsmsg.BitSwapMessage) bool {
			for _, b := range m.Blocks() {
				got = append(got, b.Cid())
			}
			return slices.ContainsFunc(got, leaves[i].Cid.Equals)
		})
	}

	want(false, 0, 1, 2, 3)
	await(0) // the burst: leaf 1 now waits for the cap, and then leaf 2
	want(true, 1, 2, 3)
	want(false, 4)
	await(4)
	want(false, 3) // cancelled, then wanted again
	await(3)
	for _, i := range []int{1, 2} {
		if slices.ContainsFunc(got, leaves[i].Cid.Equals) {
			t.Errorf("leaf %d was sent after the peer cancelled it", i)
		}
	}
	if s := holder.f.Stats().ServedBytes; s != 3*MiB {
		t.Errorf("served %d bytes, want %d (leaves 0, 4 and 3)", s, 3*MiB)
	}
}
