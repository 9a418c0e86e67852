package fetch

import (
	"context"
	"math"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/ipfs/go-cid"
)

// wantMsg is a want list asking for c with priority prio.
func wantMsg(c cid.Cid, prio int32, typ bspb.Message_Wantlist_WantType) bsmsg.BitSwapMessage {
	m := bsmsg.New(false)
	m.AddEntry(c, prio, typ, true)
	return m
}

// TestUrgentWants: only a want-block with the top priority is urgent, for
// urgentFor; at urgentMax the oldest is forgotten first.
func TestUrgentWants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := newUrgentWants()
		block, have := bspb.Message_Wantlist_Block, bspb.Message_Wantlist_Have
		a, b, c := testLeaf(t, "a"), testLeaf(t, "b"), testLeaf(t, "c")
		u.note(wantMsg(a, math.MaxInt32, block), time.Now())
		u.note(wantMsg(b, math.MaxInt32-1, block), time.Now())
		u.note(wantMsg(c, math.MaxInt32, have), time.Now())
		for _, tc := range []struct {
			name string
			c    cid.Cid
			want bool
		}{{"top priority", a, true}, {"lower priority", b, false}, {"want-have", c, false}} {
			if got := u.urgent(tc.c, time.Now()); got != tc.want {
				t.Errorf("%s: urgent %v, want %v", tc.name, got, tc.want)
			}
		}
		time.Sleep(urgentFor)
		if u.urgent(a, time.Now()) {
			t.Error("urgent after urgentFor")
		}

		var nilWants *urgentWants
		nilWants.note(wantMsg(a, math.MaxInt32, block), time.Now())
		if nilWants.urgent(a, time.Now()) {
			t.Error("a nil urgentWants remembered a want")
		}

		u = newUrgentWants()
		first := testLeaf(t, "first")
		u.note(wantMsg(first, math.MaxInt32, block), time.Now())
		time.Sleep(time.Millisecond)
		for i := range urgentMax {
			u.note(wantMsg(testLeaf(t, strconv.Itoa(i)), math.MaxInt32, block), time.Now())
		}
		if len(u.at) != urgentMax {
			t.Errorf("%d remembered, want urgentMax %d", len(u.at), urgentMax)
		}
		if u.urgent(first, time.Now()) || !u.urgent(testLeaf(t, strconv.Itoa(urgentMax-1)), time.Now()) {
			t.Error("room was not made from the oldest")
		}
	})
}

// TestServeUrgentAhead: a holder at its cap (4 MiB/s, a burst of 4 MiB)
// with seven 1 MiB blocks asked (four go at once, three wait a quarter
// second each: 3 MiB of debt) serves a block a peer wants urgently at
// once, the debt then within the burst (4 MiB), where without it
// (TestServeUrgentAhead/plain) it waits its turn, a second; the blocks
// after it keep their turns, and the next urgent ones, past one burst of
// debt, wait like any other.
func TestServeUrgentAhead(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name   string
		urgent bool
		want   []time.Duration // when the 8th, 9th and 10th blocks are handed out
	}{
		{"plain", false, []time.Duration{time.Second, 1250 * time.Millisecond, 1500 * time.Millisecond}},
		{"urgent", true, []time.Duration{0, 1250 * time.Millisecond, 1500 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st, cs := blocksHeld(t, 10)
				u := newUrgentWants()
				ss := newServingStore(st, 4*mib, 4*mib, -1, u, nil)
				start := time.Now()
				for _, c := range cs[:7] {
					go ss.Get(context.Background(), c)
				}
				synctest.Wait() // four handed out, three waiting for the cap
				if tc.urgent {
					for _, c := range cs[7:] {
						u.note(wantMsg(c, math.MaxInt32, bspb.Message_Wantlist_Block), time.Now())
					}
				}
				got := make([]time.Duration, 3)
				done := make(chan struct{})
				for k, c := range cs[7:] {
					go func() {
						defer func() { done <- struct{}{} }()
						if _, err := ss.Get(context.Background(), c); err != nil {
							t.Error(err)
						}
						got[k] = time.Since(start)
					}()
					synctest.Wait() // in this order
				}
				for range 3 {
					<-done
				}
				for k, w := range tc.want {
					if got[k] != w {
						t.Errorf("block %d handed out after %v, want %v", 8+k, got[k], w)
					}
				}
			})
		})
	}
}
