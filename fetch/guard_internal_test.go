package fetch

import (
	"fmt"
	"slices"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestGuardPrune: the guard forgets a peer's disconnect, blocks and
// answers once they are older than any Reader asks about, and keeps recent
// ones; before, only disconnects were forgotten, and a seed kept an entry
// for every peer that ever sent it a block.
func TestGuardPrune(t *testing.T) {
	g := &guard{
		f:        &Fetcher{cfg: Config{StallTimeout: 5 * time.Second}},
		gone:     map[peer.ID]time.Time{},
		useful:   map[peer.ID]time.Time{},
		answered: map[peer.ID]time.Time{},
	}
	now := time.Now()
	old, fresh := peer.ID("old"), peer.ID("fresh")
	maps := map[string]map[peer.ID]time.Time{"gone": g.gone, "useful": g.useful, "answered": g.answered}
	for _, m := range maps {
		m[old] = now.Add(-recentFor - 6*time.Second)
		m[fresh] = now.Add(-recentFor + time.Second)
	}
	g.pruneLocked(now)
	for name, m := range maps {
		if _, ok := m[old]; ok {
			t.Errorf("%s: an entry older than the horizon was kept", name)
		}
		if _, ok := m[fresh]; !ok {
			t.Errorf("%s: an entry within the horizon was dropped", name)
		}
	}
}

// TestKeepWanted: bitswap's cancel of a leaf is kept back while the leaf
// was moved (asked again) within movedFor, an open fetch wants it and no
// block of it has come; other cancels, and the wants beside them, go out.
func TestKeepWanted(t *testing.T) {
	leaf, other := testBlock(t, []byte("leaf")).Cid(), testBlock(t, []byte("other")).Cid()
	for _, tc := range []struct {
		name             string
		wanted, received bool
		moved            time.Duration // ago; 0: not moved
		sent             bool          // the cancel goes out
	}{
		{"moved", true, false, time.Millisecond, false},
		{"not moved", true, false, 0, true},
		{"moved long ago", true, false, movedFor + time.Second, true},
		{"received", true, true, time.Millisecond, true},
		{"no fetch wants it", false, false, time.Millisecond, true},
	} {
		g := &guard{wanted: map[cid.Cid]int{}, sender: map[cid.Cid]peer.ID{}, moved: map[cid.Cid]time.Time{}}
		if tc.wanted {
			g.wanted[leaf] = 1
		}
		if tc.received {
			g.sender[leaf] = "p"
		}
		if tc.moved > 0 {
			g.moved[leaf] = time.Now().Add(-tc.moved)
		}
		m := bsmsg.New(false)
		m.Cancel(leaf)
		m.AddEntry(other, 1, bspb.Message_Wantlist_Have, false)
		g.keepWanted(m)
		cancelled := slices.ContainsFunc(m.Wantlist(), func(e bsmsg.Entry) bool { return e.Cancel && e.Cid.Equals(leaf) })
		if cancelled != tc.sent {
			t.Errorf("%s: cancel sent %v, want %v", tc.name, cancelled, tc.sent)
		}
		if !slices.ContainsFunc(m.Wantlist(), func(e bsmsg.Entry) bool { return e.Cid.Equals(other) }) {
			t.Errorf("%s: the want beside the cancel was taken out", tc.name)
		}
	}
}

// TestLiftMissing: a penalty for blocks not sent is lifted by a block a
// fetch wants, not by one no fetch wants (a liar may hold some blocks),
// nor once the peer's penalties were lifted maxLifts times within
// liftWindow (a liar holding some wanted blocks would send one after each
// lie); a penalty for anything else (a bad block) is not lifted.
func TestLiftMissing(t *testing.T) {
	wanted, unwanted := testBlock(t, []byte("wanted")), testBlock(t, []byte("unwanted"))
	for _, tc := range []struct {
		name    string
		missing bool
		b       blocks.Block
		lifted  bool
		before  int // lifts of its penalties lately (negative: long ago)
		others  int // other peers whose lifts are counted, lately (negative: long ago)
	}{
		{"missing, wanted block", true, wanted, true, 0, 0},
		{"missing, block nobody wants", true, unwanted, false, 0, 0},
		{"bad block before, wanted block", false, wanted, false, 0, 0},
		{"missing, wanted block, lifted often lately", true, wanted, false, maxLifts, 0},
		{"missing, wanted block, lifted often long ago", true, wanted, true, -maxLifts, 0},
		{"missing, wanted block, many others lifted lately", true, wanted, false, 0, maxLiftPeers},
		{"missing, wanted block, many others lifted long ago", true, wanted, true, 0, -maxLiftPeers},
		{"missing, wanted block, lifted before among many others", true, wanted, true, 1, maxLiftPeers - 1},
	} {
		p := peer.ID("p")
		g := &guard{
			penalised: map[peer.ID]time.Time{p: time.Now().Add(time.Minute)},
			missing:   map[peer.ID]bool{p: tc.missing},
			wanted:    map[cid.Cid]int{wanted.Cid(): 1},
			timers:    map[peer.ID]*time.Timer{},
			lifts:     map[peer.ID]lifts{},
		}
		switch {
		case tc.before > 0:
			g.lifts[p] = lifts{since: time.Now().Add(-time.Minute), n: tc.before}
		case tc.before < 0:
			g.lifts[p] = lifts{since: time.Now().Add(-liftWindow - time.Minute), n: -tc.before}
		}
		for i := range max(tc.others, -tc.others) {
			since := time.Now().Add(-time.Minute)
			if tc.others < 0 {
				since = time.Now().Add(-liftWindow - time.Minute)
			}
			g.lifts[peer.ID(fmt.Sprint("other-", i))] = lifts{since: since, n: 1}
		}
		m := bsmsg.New(false)
		m.AddBlock(tc.b)
		got := g.liftMissingLocked(p, m)
		_, still := g.penalised[p]
		if got != tc.lifted || still == tc.lifted {
			t.Errorf("%s: lifted %v (still penalised %v), want lifted %v", tc.name, got, still, tc.lifted)
		}
		if len(g.lifts) > maxLiftPeers {
			t.Errorf("%s: %d peers' lifts counted, want at most %d", tc.name, len(g.lifts), maxLiftPeers)
		}
	}
}

// TestSendAskingTellsAsking: Config.Asking hears of a peer before a
// want-block goes out to it (the send sees it told), and not of a message
// that asks for no block: want-haves, cancels, blocks sent.
func TestSendAskingTellsAsking(t *testing.T) {
	b := testBlock(t, []byte("leaf"))
	for _, tc := range []struct {
		name string
		m    func() bsmsg.BitSwapMessage
		told bool
	}{
		{"want-block", func() bsmsg.BitSwapMessage {
			m := bsmsg.New(false)
			m.AddEntry(b.Cid(), 1, bspb.Message_Wantlist_Block, true)
			return m
		}, true},
		{"want-have", func() bsmsg.BitSwapMessage {
			m := bsmsg.New(false)
			m.AddEntry(b.Cid(), 1, bspb.Message_Wantlist_Have, true)
			return m
		}, false},
		{"cancel", func() bsmsg.BitSwapMessage {
			m := bsmsg.New(false)
			m.Cancel(b.Cid())
			return m
		}, false},
		{"block", func() bsmsg.BitSwapMessage {
			m := bsmsg.New(false)
			m.AddBlock(b)
			return m
		}, false},
	} {
		var told []peer.ID
		g := &guard{f: &Fetcher{cfg: Config{Asking: func(p peer.ID) { told = append(told, p) }}}, expect: map[peer.ID]time.Time{}}
		var toldAtSend int
		err := g.sendAsking("p", tc.m(), time.Now(), func() error { toldAtSend = len(told); return nil })
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if tc.told {
			want = 1
		}
		if toldAtSend != want || len(told) != want || (want == 1 && told[0] != "p") {
			t.Errorf("%s: Asking told %v (%d before the send), want p told %d times before it", tc.name, told, toldAtSend, want)
		}
	}
}
