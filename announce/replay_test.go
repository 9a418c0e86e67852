package announce

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestReplayGuard: each sequence number of an author is accepted once;
// numbers that overtook each other are accepted within the window; nothing
// from before the first number seen, nor below the window, is; when full,
// authors without evidence are forgotten first.
func TestReplayGuard(t *testing.T) {
	g := newReplayGuard(3, func(p peer.ID) int {
		if p == "seed" {
			return 1
		}
		return 0
	})
	steps := []struct {
		p    peer.ID
		seq  uint64
		want bool
	}{
		{"a", 1000, true},  // first contact
		{"a", 1000, false}, // the same again
		{"a", 999, true},   // overtaken by the first contact (firstSlack)
		{"a", 999, false},
		{"a", 1000 - firstSlack - 1, false}, // from before the first contact
		{"a", 1002, true},
		{"a", 1001, true}, // overtaken by 1002: still new
		{"a", 1001, false},
		{"a", 1002 + replayWindow, true},
		{"a", 1002, false}, // below the window
		{"a", 1003, true},  // the oldest in the window, not seen yet
		{"a", 1003, false},
		{"seed", 5, true},
		{"b", 7, true},
		{"c", 9, true}, // full: a (unknown, least recent) is forgotten
		{"d", 11, true},
		{"seed", 5, false}, // the seed is remembered through it
		{"seed", 6, true},
	}
	for i, s := range steps {
		if got := g.accept(s.p, s.seq); got != s.want {
			t.Fatalf("step %d: accept(%s, %d) = %v, want %v", i, s.p, s.seq, got, s.want)
		}
	}
	if _, ok := g.authors["a"]; ok || len(g.authors) != 3 {
		t.Fatalf("guard remembers %d authors, a among them: %v; want 3, without a", len(g.authors), ok)
	}
}

// TestReplayedAnnouncementIgnored replays attack 7 of issue 11 live, over
// gossipsub between real hosts on 127.0.0.1: an eavesdropper captures A's
// signed HAVE of z and FETCH of x, which A has since withdrawn (DROP), and
// later replays them to a victim that joined the mesh after they were sent
// (so gossipsub's seen-message cache does not know them, as it forgets
// every message after 2 minutes). The victim ignores both: A's sequence
// numbers are behind the ones it has seen, and its table does not list A
// for z or x. A's new messages still count.
func TestReplayedAnnouncementIgnored(t *testing.T) {
	ctx := context.Background()
	a := loopbackNode(t, true)
	spy, msgs := eavesdropper(t)
	connectHosts(t, spy, a.h)
	awaitTopicPeers(t, 1, a)

	z := testCid(t, cid.Raw, "held for a while")
	x := testCid(t, cid.DagProtobuf, "fetch abandoned")
	if err := a.a.Announce(ctx, z); err != nil {
		t.Fatal(err)
	}
	if err := a.a.Fetching(ctx, x); err != nil {
		t.Fatal(err)
	}
	got := capture(t, msgs, a.h.ID(), Have, Fetch)
	have, fetch := got[Have], got[Fetch]
	if err := a.a.Abandoned(ctx, x); err != nil {
		t.Fatal(err)
	}
	if err := a.a.Abandoned(ctx, z); err != nil {
		t.Fatal(err)
	}
	capture(t, msgs, a.h.ID(), Drop)

	y := importSeed(t, a, 1, 1000) // A holds y, and says so when v joins
	v := loopbackNode(t, false)
	connectLoopback(t, v, a)
	awaitProvider(t, v, y, a.h.ID())

	evil, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { evil.Close() })
	connectHosts(t, evil, v.h)
	for _, m := range []*pb.Message{have, fetch} {
		for len(v.tr.delivered) > 0 { // what came before
			<-v.tr.delivered
		}
		forge(t, evil, v.h.ID(), m)
		select {
		case r := <-v.tr.rejects:
			if r != pubsub.RejectValidationIgnored {
				t.Fatalf("replayed message: refused for %q, want %q", r, pubsub.RejectValidationIgnored)
			}
		case d := <-v.tr.delivered:
			t.Fatalf("the victim accepted a replayed message from %s (seqno %x)", d.GetFrom(), d.GetSeqno())
		case <-time.After(10 * time.Second):
			t.Fatal("the replayed message was neither refused nor delivered within 10 s")
		}
	}
	if got := v.a.Stats().Replayed; got != 2 {
		t.Errorf("Stats().Replayed = %d, want 2", got)
	}
	if hasProvider(v, z, a.h.ID()) || slices.Contains(v.a.Table().Fetchers(x), a.h.ID()) || hasProvider(v, x, a.h.ID()) {
		t.Fatalf("a replayed message put A back in the victim's table: providers of z %v, of x %v",
			v.a.Table().Providers(z, 0), v.a.Table().Providers(x, 0))
	}
	w := importSeed(t, a, 2, 1000) // a new HAVE of A still counts
	awaitProvider(t, v, w, a.h.ID())
}

// eavesdropper starts a host with a gossipsub subscribed to the mesh's
// topic and returns it with the signed messages it receives.
func eavesdropper(t *testing.T) (host.Host, <-chan *pubsub.Message) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ps, err := pubsub.NewGossipSub(ctx, h, PubSubOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := ps.Join(Topic("test"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tp.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Cancel)
	ch := make(chan *pubsub.Message, 64)
	go func() {
		defer close(ch)
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				return
			}
			ch <- m
		}
	}()
	return h, ch
}

// capture returns the first message of each of kinds from author in msgs
// (pubsub validates in parallel: they may come in any order).
func capture(t *testing.T, msgs <-chan *pubsub.Message, author peer.ID, kinds ...Kind) map[Kind]*pb.Message {
	t.Helper()
	got := make(map[Kind]*pb.Message)
	timeout := time.After(10 * time.Second)
	for len(got) < len(kinds) {
		select {
		case m := <-msgs:
			d, err := Decode(m.Data)
			if err == nil && m.GetFrom() == author && slices.Contains(kinds, d.Kind) && got[d.Kind] == nil {
				got[d.Kind] = m.Message
			}
		case <-timeout:
			t.Fatalf("captured %d of %v from %s", len(got), kinds, author)
		}
	}
	return got
}

// connectHosts dials b from a.
func connectHosts(t *testing.T, a, b host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
}
