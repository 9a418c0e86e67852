package announce

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// hasOutbound reports whether from has an outbound pubsub stream to to.
func hasOutbound(from, to *tnode) bool { return pubsubStreams(from.h, to.h.ID()).out > 0 }

// heardPair connects a (no store) to b, which imports a root that a then
// hears of, and returns both.
func heardPair(t *testing.T, seed uint64) (a, b *tnode) {
	t.Helper()
	n := newTestNet(t)
	a = n.node(nodeOpts{noStore: true})
	b = n.node(nodeOpts{})
	n.connect(a, b)
	first := importSeed(t, b, seed, 1000)
	awaitProvider(t, a, first, b.h.ID())
	return a, b
}

// resetWriter resets from's outbound pubsub streams to to, as when one of
// two duplicate connections closes or a write to a slow reader times out:
// the connection stays up. It fails the test if there were none.
func resetWriter(t *testing.T, from, to *tnode) {
	t.Helper()
	n := 0
	for _, c := range from.h.Network().ConnsToPeer(to.h.ID()) {
		for _, s := range pubsubStreamsOf(c) {
			if s.Stat().Direction == network.DirOutbound {
				_ = s.Reset()
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no pubsub writer stream to reset")
	}
}

// TestResubscribeAfterWriterReset: b's pubsub writer stream to a dies
// while they stay connected. go-libp2p-pubsub then forgets a's topics and
// a never sends them again, so b's HAVEs stop reaching a. b sees a leave
// the topic while connected and resets their pubsub streams, and both
// sides learn each other's topics again: a hears of b's next root.
func TestResubscribeAfterWriterReset(t *testing.T) {
	a, b := heardPair(t, 70)
	awaitOnTopic(t, b, a.h.ID())

	resetWriter(t, b, a)
	second := importSeed(t, b, 71, 1000)
	awaitProvider(t, a, second, b.h.ID())
	if got := b.a.Stats().Resubscribes; got == 0 || got > uint64(resetBudget.max) {
		t.Fatalf("b's Resubscribes = %d, want 1 to %d", got, resetBudget.max)
	}
	if a.h.Network().Connectedness(b.h.ID()) != network.Connected {
		t.Fatal("the repair closed the connection")
	}
}

// TestRedialWhenPeerGaveUp: b's pubsub writer to a dies again and again
// while they stay connected, until b's pubsub gives up on a (it restarts a
// writer at most 4 times in 10 minutes) and has no stream to a at all.
// Resetting streams cannot bring that back; a closes the connection and
// dials b again, and both pubsubs start afresh: a hears of b's next root.
func TestRedialWhenPeerGaveUp(t *testing.T) {
	a, b := heardPair(t, 74)
	// Up to five deaths: pubsub restarts the writer after each of the
	// first four (after 0, 0.1, 0.2-0.3 and 0.4-0.7 s), not after the
	// fifth. A repair's reset in between counts as one.
	for range 5 {
		if !awaitWriter(b, a, 2*time.Second) {
			break
		}
		resetWriter(t, b, a)
	}
	second := importSeed(t, b, 75, 1000)
	awaitProvider(t, a, second, b.h.ID())
	if got := a.a.Stats().Redials + b.a.Stats().Redials; got == 0 {
		t.Fatal("a heard b again without a redial")
	}
}

// awaitWriter reports whether from has an outbound pubsub stream to to
// within d.
func awaitWriter(from, to *tnode, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !hasOutbound(from, to) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestResubscribeKeepsOtherTopics: a peer whose Announcer closes while its
// PubSub goes on (another mesh uses it) leaves the topic while connected.
// The repair resets the pubsub streams (twice at most: it cannot tell a
// peer that left from one whose reset lost the race), and the other mesh's
// gossip on the same streams carries on.
func TestResubscribeKeepsOtherTopics(t *testing.T) {
	n := newTestNet(t)
	s := &tnode{h: n.host()}
	s.ps, s.tr = n.pubsub(s.h, "test")
	leaving := n.start(&tnode{h: s.h, ps: s.ps, tr: s.tr}, nodeOpts{noStore: true})
	staying := n.start(&tnode{h: s.h, ps: s.ps, tr: s.tr}, nodeOpts{name: "other"})
	p := &tnode{h: n.host()}
	p.ps, p.tr = n.pubsub(p.h, "test")
	pTest := n.start(&tnode{h: p.h, ps: p.ps, tr: p.tr}, nodeOpts{noStore: true})
	pOther := n.start(&tnode{h: p.h, ps: p.ps, tr: p.tr}, nodeOpts{name: "other", noStore: true})
	n.connect(s, p)
	awaitOnTopic(t, pTest, s.h.ID())
	first := importSeed(t, staying, 72, 1000)
	awaitProvider(t, pOther, first, s.h.ID())

	if err := leaving.a.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for pTest.a.Stats().Resubscribes == 0 {
		if time.Now().After(deadline) {
			t.Fatal("p never repaired the peer that left its topic while connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second := importSeed(t, staying, 73, 1000)
	awaitProvider(t, pOther, second, s.h.ID())
	if got := pTest.a.Stats().Resubscribes; got > uint64(resetBudget.max) {
		t.Fatalf("p's Resubscribes = %d, want at most %d (the peer left for good)", got, resetBudget.max)
	}
}

// TestNoRepairForPeersNeverOnTopic: a peer that runs pubsub but is not on
// the topic (a Kubo node with pubsub, another mesh's node) is looked at
// after it connects and left alone: its streams are all there.
func TestNoRepairForPeersNeverOnTopic(t *testing.T) {
	n := newTestNet(t)
	a := n.node(nodeOpts{})
	other := n.node(nodeOpts{name: "other"})
	looked := make(chan peer.ID, 16)
	hook := func(p peer.ID) { looked <- p }
	a.a.lookHook.Store(&hook)
	n.connect(a, other)
	deadline := time.After(10 * time.Second)
	for p := peer.ID(""); p != other.h.ID(); {
		select {
		case p = <-looked:
		case <-deadline:
			t.Fatal("a never looked at the peer that connected")
		}
	}
	if st := a.a.Stats(); st.Resubscribes != 0 || st.Redials != 0 {
		t.Fatalf("a repaired a peer never on its topic: %d resets, %d redials", st.Resubscribes, st.Redials)
	}
}

// awaitOnTopic waits until nd's pubsub lists p on nd's topic.
func awaitOnTopic(t *testing.T, nd *tnode, p peer.ID) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, q := range nd.ps.ListPeers(nd.a.Topic()) {
			if q == p {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listed %s on its topic", nd.h.ID(), p)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRepairsPolicy: a peer is looked at when due, reset at most twice per
// resetEvery, and redialled at most maxRedials times in redialWindow.
func TestRepairsPolicy(t *testing.T) {
	r := newRepairs()
	t0 := time.Unix(1000, 0)
	p, q := peer.ID("p"), peer.ID("q")
	r.lookAt(p, t0.Add(repairGrace), true)
	r.lookAt(q, t0.Add(300*time.Millisecond+repairGrace), false)
	if ps, next := r.take(t0.Add(repairGrace - time.Millisecond)); len(ps) != 0 || !next.Equal(t0.Add(repairGrace)) {
		t.Fatalf("before the grace: take = %v, next %v", ps, next)
	}
	ls, next := r.take(t0.Add(repairGrace))
	if len(ls) != 1 || ls[0].p != p || !ls[0].left || !next.Equal(t0.Add(300*time.Millisecond+repairGrace)) {
		t.Fatalf("at the grace: take = %v, next %v; want p (left), q's grace", ls, next)
	}
	// A look after a leave stays one after a leave when looked at again
	// for another reason.
	r.lookAt(p, t0.Add(2*repairGrace), false)
	r.lookAt(p, t0.Add(2*repairGrace), true)
	r.lookAt(p, t0.Add(2*repairGrace), false)
	if ls, _ := r.take(t0.Add(2 * repairGrace)); len(ls) != 2 || ls[0].left == ls[1].left {
		t.Fatalf("take = %v, want p left and q not", ls)
	}
	if ls, _ := r.take(t0.Add(repairGrace)); len(ls) != 0 {
		t.Fatalf("taken twice: %v", ls)
	}
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {time.Second, false}, {2 * repairGrace, true}, {3 * repairGrace, false},
		{resetEvery - time.Millisecond, false}, {resetEvery, true}, {resetEvery + time.Second, false},
	} {
		if got, _ := r.allowReset(p, t0.Add(c.at)); got != c.want {
			t.Fatalf("allowReset at +%v = %v, want %v", c.at, got, c.want)
		}
	}
	if _, at := r.allowReset(p, t0.Add(resetEvery+time.Second)); !at.IsZero() {
		t.Fatalf("p's reset over budget said it may be at %v", at)
	}
	r2 := newRepairs()
	r2.allowReset(p, t0)
	if ok, at := r2.allowReset(p, t0.Add(repairGrace)); ok || !at.Equal(t0.Add(2*repairGrace)) {
		t.Fatalf("a second reset soon after: %v, may at %v; want false, at %v", ok, at, t0.Add(2*repairGrace))
	}
	if ok, _ := r.allowReset(q, t0); !ok {
		t.Fatal("q's reset held back by p's")
	}
	// Redials: not within redialEvery of the last, at most maxRedials
	// within redialWindow.
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {redialEvery - time.Millisecond, false}, {redialEvery, true}, {2 * redialEvery, true},
		{3 * redialEvery, false}, {redialWindow - time.Millisecond, false}, {redialWindow, true},
	} {
		if got := r.allowRedial(p, t0.Add(c.at)); got != c.want {
			t.Fatalf("allowRedial at +%v = %v, want %v", c.at, got, c.want)
		}
	}
	if !r.allowRedial(q, t0) {
		t.Fatal("q's redial held back by p's")
	}
}
