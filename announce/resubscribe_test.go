package announce

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// hasOutbound reports whether from has an outbound pubsub stream to to.
func hasOutbound(from, to *tnode) bool {
	for _, c := range from.h.Network().ConnsToPeer(to.h.ID()) {
		for _, s := range c.GetStreams() {
			if isPubSub(s.Protocol()) && s.Stat().Direction == network.DirOutbound {
				return true
			}
		}
	}
	return false
}

// resetWriter resets from's outbound pubsub streams to to, as when one of
// two duplicate connections closes or a write to a slow reader times out:
// the connection stays up. It fails the test if there were none.
func resetWriter(t *testing.T, from, to *tnode) {
	t.Helper()
	n := 0
	for _, c := range from.h.Network().ConnsToPeer(to.h.ID()) {
		for _, s := range c.GetStreams() {
			if isPubSub(s.Protocol()) && s.Stat().Direction == network.DirOutbound {
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
	n := newTestNet(t)
	a := n.node(nodeOpts{noStore: true})
	b := n.node(nodeOpts{})
	n.connect(a, b)
	first := importSeed(t, b, 70, 1000)
	awaitProvider(t, a, first, b.h.ID())
	awaitOnTopic(t, b, a.h.ID())

	resetWriter(t, b, a)
	second := importSeed(t, b, 71, 1000)
	awaitProvider(t, a, second, b.h.ID())
	if got := b.a.Stats().Resubscribes; got != 1 {
		t.Fatalf("b's Resubscribes = %d, want 1", got)
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
	n := newTestNet(t)
	a := n.node(nodeOpts{noStore: true})
	b := n.node(nodeOpts{})
	n.connect(a, b)
	first := importSeed(t, b, 74, 1000)
	awaitProvider(t, a, first, b.h.ID())
	// Five deaths: pubsub restarts the writer after each of the first
	// four (after 0, 0.1, 0.2-0.3 and 0.4-0.7 s), not after the fifth.
	// Each is a leave at both ends less than repairGrace after the last,
	// so neither repairs before the fifth.
	for k := range 5 {
		if !awaitWriter(b, a, 2*time.Second) {
			t.Fatalf("b's pubsub did not restart its writer to a after %d deaths", k)
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
// The repair resets the pubsub streams once, and the other mesh's gossip
// on the same streams carries on.
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
	if got := pTest.a.Stats().Resubscribes; got != 1 {
		t.Fatalf("p's Resubscribes = %d, want 1 (the peer left for good)", got)
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

// TestRepairsPolicy: a peer is looked at when due, reset at most once per
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
	}{{0, true}, {time.Second, false}, {resetEvery - time.Millisecond, false}, {resetEvery, true}, {resetEvery + time.Second, false}} {
		if got := r.allowReset(p, t0.Add(c.at)); got != c.want {
			t.Fatalf("allowReset at +%v = %v, want %v", c.at, got, c.want)
		}
	}
	if !r.allowReset(q, t0) {
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
