package fetch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	bsnet "github.com/ipfs/boxo/bitswap/network"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

func testLeaf(t testing.TB, s string) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte(s), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

func testLeaves(t *testing.T, n int) []cid.Cid {
	t.Helper()
	cs := make([]cid.Cid, n)
	for i := range cs {
		cs[i] = testLeaf(t, string(rune('a'+i)))
	}
	return cs
}

// TestPromisesLateAfter: an unproven peer's promise is late after
// lateFactor times its round trip plus the fastest delivering peer's time
// per block, within [lateFloor, haveDeadline].
func TestPromisesLateAfter(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name     string
		rtt, blk time.Duration // the liar's round trip, the seed's time per block (0: none)
		want     time.Duration
	}{
		{"nothing known: the floor", 0, 0, lateFloor},
		{"loopback: the floor", 1 * ms, 8 * ms, lateFloor},
		{"scaled", 10 * ms, 50 * ms, 240 * ms},
		{"slow link", 150 * ms, 200 * ms, 1400 * ms},
		{"at most haveDeadline", 400 * ms, 600 * ms, haveDeadline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			liar, seed := peer.ID("liar"), peer.ID("seed")
			c := testLeaves(t, 2)
			t0 := time.Unix(1000, 0)
			ps := newPromises(time.Minute, nil)
			if tc.rtt > 0 {
				ps.asked(liar, c[0], false, true, t0)
				ps.have(liar, c[0], t0.Add(tc.rtt))
			}
			if tc.blk > 0 {
				ps.asked(seed, c[1], true, true, t0)
				ps.delivered(seed, c[1], t0.Add(tc.blk))
			}
			if got := ps.lateAfter(liar); got != tc.want {
				t.Errorf("lateAfter = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPromisesLate: an unproven peer's want-block not answered by lateAfter
// is late only when another peer said HAVE of the block; a proven peer's
// is not judged; a late promise voids the peer's HAVE of the block.
func TestPromisesLate(t *testing.T) {
	liar, seed := peer.ID("liar"), peer.ID("seed")
	c := testLeaves(t, 4)
	t0 := time.Unix(1000, 0)
	ps := newPromises(time.Minute, nil)

	// A sole provider that is slow is waited on.
	ps.have(liar, c[0], t0)
	ps.asked(liar, c[0], true, true, t0)
	if l, ls := ps.due(t0.Add(10*lateFloor), nil); len(l)+len(ls) != 0 {
		t.Fatalf("a sole slow provider was judged: %v %v", l, ls)
	}

	// With the seed holding it too, the liar's promise is late at exactly
	// lateFloor (nothing is known of either yet).
	ps.have(seed, c[1], t0)
	ps.have(liar, c[1], t0)
	ps.asked(liar, c[1], true, true, t0)
	if at, ok := ps.next(); !ok || at.After(t0.Add(lateFloor)) {
		t.Fatalf("next = %v %v, want at most %v", at, ok, t0.Add(lateFloor))
	}
	if l, _ := ps.due(t0.Add(lateFloor-time.Millisecond), nil); len(l) != 0 {
		t.Fatalf("late before lateAfter: %v", l)
	}
	l, _ := ps.due(t0.Add(lateFloor), nil)
	if len(l) != 1 || l[0] != (promiseKey{liar, c[1]}) {
		t.Fatalf("due = %v, want the liar's promise of c1 late", l)
	}
	if void, _ := ps.have(liar, c[1], t0.Add(lateFloor)); !void {
		t.Fatal("the liar's HAVE of a block it was late with is not void")
	}

	// A peer that delivers is not judged late: bitswap prefers it.
	t1 := t0.Add(time.Second)
	ps.asked(seed, c[2], true, true, t1)
	ps.delivered(seed, c[2], t1.Add(10*time.Millisecond))
	ps.have(liar, c[3], t1)
	ps.have(seed, c[3], t1)
	ps.asked(seed, c[3], true, true, t1)
	if l, _ := ps.due(t1.Add(haveDeadline), nil); len(l) != 0 {
		t.Fatalf("a delivering peer was judged late: %v", l)
	}
}

// TestPromisesHold: a peer that has delivered nothing has probeLimit of its
// HAVEs told to bitswap, less its late promises; the rest are held until it
// delivers a block.
func TestPromisesHold(t *testing.T) {
	newbie, seed := peer.ID("newbie"), peer.ID("seed")
	c := testLeaves(t, 6)
	t0 := time.Unix(1000, 0)
	ps := newPromises(time.Minute, nil)
	var held []cid.Cid
	for i, x := range c {
		if _, hold := ps.have(newbie, x, t0); hold {
			held = append(held, x)
		} else if i >= probeLimit {
			t.Fatalf("HAVE %d of an unproven peer told to bitswap, want at most %d", i, probeLimit)
		}
	}
	if len(held) != len(c)-probeLimit {
		t.Fatalf("%d HAVEs held, want %d", len(held), len(c)-probeLimit)
	}
	if r := ps.release(); len(r) != 0 {
		t.Fatalf("released %v before the peer delivered", r)
	}
	ps.delivered(newbie, c[0], t0.Add(time.Millisecond))
	if r := ps.release(); len(r) != len(held) {
		t.Fatalf("released %d after the peer delivered, want the %d held", len(r), len(held))
	}

	// A late promise uses a probe up until the peer delivers.
	liar := peer.ID("liar")
	cs := testLeaves(t, 12)[6:]
	ps.have(seed, cs[0], t0)
	ps.have(liar, cs[0], t0)
	ps.asked(liar, cs[0], true, true, t0)
	if l, _ := ps.due(t0.Add(haveDeadline), nil); len(l) != 1 {
		t.Fatalf("due = %v, want the liar's promise late", l)
	}
	told := 0
	for _, x := range cs[1:] {
		if _, hold := ps.have(liar, x, t0.Add(haveDeadline)); !hold {
			told++
		}
	}
	if told != probeLimit-1 {
		t.Fatalf("%d HAVEs of a peer with a late promise told, want %d", told, probeLimit-1)
	}
}

// TestPromisesLiar: a peer with lateLimit late promises and no block
// delivered for haveDeadline since the first is a liar; a block delivered
// meanwhile forgives it.
func TestPromisesLiar(t *testing.T) {
	for _, forgive := range []bool{false, true} {
		liar, seed := peer.ID("liar"), peer.ID("seed")
		c := testLeaves(t, 3)
		t0 := time.Unix(1000, 0)
		ps := newPromises(time.Minute, nil)
		for _, x := range c[:2] {
			ps.have(seed, x, t0)
			ps.have(liar, x, t0)
			ps.asked(liar, x, true, true, t0)
		}
		if l, ls := ps.due(t0.Add(lateFloor), nil); len(l) != 2 || len(ls) != 0 {
			t.Fatalf("due = %v, %v; want two late and no liar yet", l, ls)
		}
		if forgive {
			ps.asked(liar, c[2], true, true, t0.Add(lateFloor))
			ps.delivered(liar, c[2], t0.Add(lateFloor+time.Millisecond))
		}
		if at, ok := ps.next(); !forgive && (!ok || !at.Equal(t0.Add(lateFloor+haveDeadline))) {
			t.Fatalf("next = %v %v, want %v", at, ok, t0.Add(lateFloor+haveDeadline))
		}
		if _, ls := ps.due(t0.Add(lateFloor+haveDeadline-time.Millisecond), nil); len(ls) != 0 {
			t.Fatalf("liar named before haveDeadline: %v", ls)
		}
		_, ls := ps.due(t0.Add(lateFloor+haveDeadline), nil)
		if want := !forgive; (len(ls) == 1 && ls[0] == liar) != want {
			t.Fatalf("forgive %v: liars = %v, want the liar named: %v", forgive, ls, want)
		}
	}
}

// TestPromisesPeerGone: what a peer was asked before its connection went
// (a seed killed or cut off) is not held against it once it is back.
func TestPromisesPeerGone(t *testing.T) {
	seed, other := peer.ID("seed"), peer.ID("other")
	c := testLeaves(t, 3)
	t0 := time.Unix(1000, 0)
	ps := newPromises(time.Minute, nil)
	for _, x := range c {
		ps.have(seed, x, t0)
		ps.have(other, x, t0)
		ps.asked(seed, x, true, true, t0)
	}
	ps.gone(seed)
	l, liars := ps.due(t0.Add(10*haveDeadline), nil)
	if len(l)+len(liars) != 0 {
		t.Fatalf("a peer that lost its connection was late with %v, liars %v", l, liars)
	}
	if _, ok := ps.next(); ok {
		t.Fatal("promises of a gone peer are still open")
	}
}

// TestPromisesRefused: a peer's DONT_HAVE of a wanted block stands until
// that peer says HAVE of it, the block is forgotten or the peer is gone;
// another peer's HAVE of it, or a want of it not yet answered, makes it no
// longer refused by all; a broadcast want-have (no DONT_HAVE asked) does
// not.
func TestPromisesRefused(t *testing.T) {
	seed, other := peer.ID("seed"), peer.ID("other")
	c := testLeaves(t, 4)
	t0 := time.Unix(1000, 0)
	ps := newPromises(time.Minute, nil)
	for _, x := range c {
		ps.asked(seed, x, true, true, t0)
		ps.refused(seed, x, t0)
	}
	for i, x := range c {
		if !ps.refusedOnly(x) {
			t.Fatalf("leaf %d: not refused after the seed's DONT_HAVE", i)
		}
	}
	if _, ok := ps.open[promiseKey{seed, c[0]}]; ok {
		t.Error("a DONT_HAVE left the want-block open")
	}
	ps.have(other, c[0], t0)
	ps.have(seed, c[1], t0)
	ps.forget(c[2])
	for i, want := range []bool{false, false, false, true} {
		if got := ps.refusedOnly(c[i]); got != want {
			t.Errorf("leaf %d: refusedOnly = %v, want %v", i, got, want)
		}
	}
	// Bitswap's broadcast want-have asks for no DONT_HAVE: a peer that
	// lacks the block says nothing, and owes nothing.
	ps.asked(other, c[3], false, false, t0)
	if !ps.refusedOnly(c[3]) {
		t.Error("not refused while a peer sent only a broadcast want-have (which asks no DONT_HAVE) is silent")
	}
	ps.asked(other, c[3], false, true, t0)
	if ps.refusedOnly(c[3]) {
		t.Error("refused by all while a peer asked has not answered")
	}
	ps.refused(other, c[3], t0)
	if !ps.refusedOnly(c[3]) {
		t.Error("not refused once every peer asked said DONT_HAVE")
	}
	ps.gone(seed)
	ps.gone(other)
	if ps.refusedOnly(c[3]) || len(ps.donts) != 0 {
		t.Errorf("a gone peer's DONT_HAVE still stands: %v", ps.donts)
	}
}

// TestPromisesLiarPenalised: an unproven seed's promise is late because a
// liar said HAVE of the same block, voiding the seed's HAVE; once the liar
// is penalised the void is lifted, and a penalised peer's HAVE no longer
// makes another peer's promise late.
func TestPromisesLiarPenalised(t *testing.T) {
	liar, seed := peer.ID("liar"), peer.ID("seed")
	c := testLeaves(t, 2)
	t0 := time.Unix(1000, 0)
	ps := newPromises(time.Minute, nil)
	ps.have(liar, c[0], t0)
	ps.have(seed, c[0], t0)
	ps.asked(seed, c[0], true, true, t0)
	if l, _ := ps.due(t0.Add(lateFloor), nil); len(l) != 1 || l[0].p != seed {
		t.Fatalf("due = %v, want the seed's promise late (the liar said HAVE too)", l)
	}
	if void, _ := ps.have(seed, c[0], t0.Add(lateFloor)); !void {
		t.Fatal("the seed's HAVE is not void after its promise was late")
	}
	if lifted := ps.penalised(liar); len(lifted) != 1 || lifted[0] != (promiseKey{seed, c[0]}) {
		t.Fatalf("penalised(liar) lifted %v, want the seed's void of %s (bitswap is to hear HAVE again)", lifted, c[0])
	}
	if void, _ := ps.have(seed, c[0], t0.Add(lateFloor)); void {
		t.Fatal("the seed's HAVE is still void after the liar was penalised")
	}

	penalised := func(p peer.ID) bool { return p == liar }
	t1 := t0.Add(time.Hour)
	ps.have(liar, c[1], t1)
	ps.have(seed, c[1], t1)
	ps.asked(seed, c[1], true, true, t1)
	if l, ls := ps.due(t1.Add(haveDeadline), penalised); len(l)+len(ls) != 0 {
		t.Fatalf("due = %v, %v: a penalised peer's HAVE made the seed's promise late", l, ls)
	}
}

// recorder is a bitswap receiver that records, with the time, what the
// guard tells bitswap.
type recorder struct {
	mu     sync.Mutex
	haves  map[peer.ID]int       // HAVEs told, by peer
	resets map[peer.ID]time.Time // first disconnect told, by peer
}

func (r *recorder) ReceiveMessage(_ context.Context, p peer.ID, m bsmsg.BitSwapMessage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.haves[p] += len(m.Haves())
}
func (r *recorder) ReceiveError(error)    {}
func (r *recorder) PeerConnected(peer.ID) {}
func (r *recorder) PeerDisconnected(p peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.resets[p]; !ok {
		r.resets[p] = time.Now()
	}
}

func (r *recorder) reset(p peer.ID) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.resets[p]
	return at, ok
}

// recordedGuard returns a Fetcher on a host with no transport whose guard
// passes what it lets through to a recorder instead of bitswap; both are
// closed when t ends.
func recordedGuard(t *testing.T) (*Fetcher, *recorder) {
	t.Helper()
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.NoTransports, libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	f := newMemFetcher(t, h)
	t.Cleanup(func() { f.Close() })
	rec := &recorder{haves: make(map[peer.ID]int), resets: make(map[peer.ID]time.Time)}
	f.guard.mu.Lock()
	f.guard.receivers = []bsnet.Receiver{rec}
	f.guard.mu.Unlock()
	return f, rec
}

// TestGuardLiarTiming runs the guard's timers in a synctest bubble, where
// time is exact. A seed delivers a block in 50 ms; a liar answers a
// want-have in 10 ms and says HAVE of six blocks the seed also has: bitswap
// hears probeLimit of the liar's HAVEs. The liar's want-block is late, and
// the liar reset in bitswap, exactly 4 x (10 + 50) ms after it was sent;
// with a second late promise it is penalised exactly haveDeadline after the
// first; the seed is not.
func TestGuardLiarTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, rec := recordedGuard(t)
		g := f.guard
		rv := guardReceiver{g}
		ctx := context.Background()
		liar, seed := peer.ID("liar"), peer.ID("seed")
		seedBlock := blocks.NewBlock([]byte("seed's first block"))
		c := testLeaves(t, 6)
		g.want(append([]cid.Cid{seedBlock.Cid()}, c...))
		want := func(p peer.ID, typ pb.Message_Wantlist_WantType, cs ...cid.Cid) {
			m := bsmsg.New(false)
			for _, x := range cs {
				m.AddEntry(x, 1, typ, true)
			}
			g.asked(p, m)
		}
		haves := func(p peer.ID, cs ...cid.Cid) {
			m := bsmsg.New(false)
			for _, x := range cs {
				m.AddHave(x)
			}
			rv.ReceiveMessage(ctx, p, m)
		}

		want(seed, pb.Message_Wantlist_Block, seedBlock.Cid())
		time.Sleep(50 * time.Millisecond)
		m := bsmsg.New(false)
		m.AddBlock(seedBlock)
		rv.ReceiveMessage(ctx, seed, m)
		haves(seed, c...)

		want(liar, pb.Message_Wantlist_Have, c...)
		time.Sleep(10 * time.Millisecond)
		haves(liar, c...)
		if got := rec.haves[liar]; got != probeLimit {
			t.Fatalf("bitswap heard %d HAVEs of the liar, want %d", got, probeLimit)
		}

		t0 := time.Now()
		want(liar, pb.Message_Wantlist_Block, c[0], c[1])
		late := 4 * (10 + 50) * time.Millisecond
		time.Sleep(late - time.Millisecond)
		synctest.Wait()
		if _, ok := rec.reset(liar); ok {
			t.Fatalf("liar reset before its promise was late (%v)", late)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if at, ok := rec.reset(liar); !ok || at.Sub(t0) != late {
			t.Fatalf("liar reset %v after its want-block (%v), want exactly %v", at.Sub(t0), ok, late)
		}
		time.Sleep(haveDeadline - time.Millisecond)
		synctest.Wait()
		if f.Penalised(liar) {
			t.Fatal("liar penalised before haveDeadline after its first late promise")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if !f.Penalised(liar) || f.Penalised(seed) {
			t.Fatalf("penalised: liar %v, seed %v; want the liar only", f.Penalised(liar), f.Penalised(seed))
		}
	})
}

// TestPromisesLiveHolder: a stuck leaf is asked directly of the holder
// that delivered to this node last, not of one with a shorter time per
// block learnt long ago (a slow holder's burst), nor of one already asked
// for the leaf or left out; with none, nobody.
func TestPromisesLiveHolder(t *testing.T) {
	ps := newPromises(time.Minute, nil)
	cs := testLeaves(t, 4)
	t0 := time.Unix(1000, 0)
	none := func(peer.ID) bool { return false }
	if got := ps.liveHolder(cs[0], none); got != "" {
		t.Errorf("no holder: %q", got)
	}
	// slow delivers one block at once (its burst), fast one later, slowly.
	ps.asked("slow", cs[1], true, true, t0)
	ps.delivered("slow", cs[1], t0.Add(10*time.Millisecond))
	ps.asked("fast", cs[2], true, true, t0.Add(time.Second))
	ps.delivered("fast", cs[2], t0.Add(1200*time.Millisecond))
	if ps.blk["slow"] >= ps.blk["fast"] {
		t.Fatalf("time per block: slow %v, fast %v; the test wants slow's shorter", ps.blk["slow"], ps.blk["fast"])
	}
	for _, p := range []peer.ID{"slow", "fast", "new"} {
		ps.have(p, cs[0], t0.Add(2*time.Second))
	}
	if got := ps.liveHolder(cs[0], none); got != "fast" {
		t.Errorf("holders slow, fast and new: %q, want fast (the last to deliver)", got)
	}
	ps.asked("fast", cs[0], true, true, t0.Add(3*time.Second))
	if got := ps.liveHolder(cs[0], none); got != "slow" {
		t.Errorf("fast asked already: %q, want slow (it delivered, new never did)", got)
	}
	if got := ps.liveHolder(cs[0], func(p peer.ID) bool { return p == "slow" }); got != "new" {
		t.Errorf("fast asked, slow left out: %q, want new", got)
	}
}

// TestPromisesBusy: a want-block that has waited busyAfter at a peer that
// delivers is moved, once, when another peer said HAVE of the block,
// bitswap heard it, it was not asked for the block and fewer of this
// node's want-blocks wait on it: to that peer.
func TestPromisesBusy(t *testing.T) {
	hub, idle, newbie := peer.ID("hub"), peer.ID("idle"), peer.ID("newbie")
	for _, tc := range []struct {
		name string
		set  func(ps *promises, c []cid.Cid, t0 time.Time)
		want bool
	}{
		{"an idle holder", func(ps *promises, c []cid.Cid, t0 time.Time) {
			ps.have(idle, c[0], t0)
		}, true},
		{"no other holder", func(*promises, []cid.Cid, time.Time) {}, false},
		{"the other holder asked for it already", func(ps *promises, c []cid.Cid, t0 time.Time) {
			ps.have(idle, c[0], t0)
			ps.asked(idle, c[0], true, true, t0)
		}, false},
		{"two other peers asked for it already", func(ps *promises, c []cid.Cid, t0 time.Time) {
			// Once maxAskedForMove peers are asked, no more: in a crowd
			// whose members all hold the block, each look would ask one
			// more.
			ps.have(idle, c[0], t0)
			for _, q := range []peer.ID{newbie, "third"} {
				ps.have(q, c[0], t0)
				ps.asked(q, c[0], true, true, t0)
			}
		}, false},
		{"one other peer asked for it already", func(ps *promises, c []cid.Cid, t0 time.Time) {
			ps.have(idle, c[0], t0)
			ps.have(newbie, c[0], t0)
			ps.asked(newbie, c[0], true, true, t0)
		}, true},
		{"the other holder as busy", func(ps *promises, c []cid.Cid, t0 time.Time) {
			ps.have(idle, c[0], t0)
			for _, x := range c[3:] {
				ps.asked(idle, x, true, true, t0)
			}
		}, false},
		{"the other holder's HAVE held back", func(ps *promises, c []cid.Cid, t0 time.Time) {
			// An unproven peer's HAVEs past probeLimit are not told to
			// bitswap, which would have nobody to ask.
			ps.have(newbie, c[3], t0)
			ps.have(newbie, c[4], t0)
			ps.have(newbie, c[0], t0)
		}, false},
		{"the other holder penalised", func(ps *promises, c []cid.Cid, t0 time.Time) {
			ps.have(peer.ID("penalised"), c[0], t0)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testLeaves(t, 6)
			t0 := time.Unix(1000, 0)
			ps := newPromises(time.Minute, nil)
			ps.asked(idle, c[5], true, true, t0.Add(-time.Second))
			ps.delivered(idle, c[5], t0.Add(-time.Second))
			ps.asked(hub, c[5], true, true, t0.Add(-time.Second))
			ps.delivered(hub, c[5], t0.Add(-time.Second))
			for _, x := range c[:3] {
				ps.have(hub, x, t0)
				ps.asked(hub, x, true, true, t0)
			}
			tc.set(ps, c, t0)
			out := func(p peer.ID) bool { return p == "penalised" }
			if at, ok := ps.next(); !ok || at.After(t0.Add(busyAfter)) {
				t.Fatalf("next = %v %v, want at most %v", at, ok, t0.Add(busyAfter))
			}
			if m := ps.busy(t0.Add(busyAfter-time.Millisecond), out); len(m) != 0 {
				t.Fatalf("moved before busyAfter: %v", m)
			}
			m := ps.busy(t0.Add(busyAfter), out)
			moved := slices.Contains(m, move{promiseKey{hub, c[0]}, idle})
			if moved != tc.want {
				t.Fatalf("busy = %v: c0 moved to the idle holder %v, want %v", m, moved, tc.want)
			}
			if again := ps.busy(t0.Add(2*busyAfter-time.Millisecond), out); len(again) != 0 {
				t.Fatalf("weighed again within busyAfter: %v", again)
			}
		})
	}
}

// TestPromisesBusyBounded: a want-block that busy does not move because
// maxAskedForMove peers are asked for it is looked at again busyAfter
// later. Left unweighed, next called for a look at once, and the promise
// timer fired every millisecond while the want was open.
func TestPromisesBusyBounded(t *testing.T) {
	c := testLeaves(t, 2)
	t0 := time.Unix(1000, 0)
	ps := newPromises(time.Minute, nil)
	peers := []peer.ID{"a", "b", "c", "idle"}
	for _, p := range peers {
		ps.asked(p, c[1], true, true, t0.Add(-time.Second))
		ps.delivered(p, c[1], t0.Add(-time.Second))
		ps.have(p, c[0], t0)
	}
	for _, p := range peers[:maxAskedForMove] {
		ps.asked(p, c[0], true, true, t0)
	}
	now := t0.Add(busyAfter)
	if m := ps.busy(now, nil); len(m) != 0 {
		t.Fatalf("busy = %v, want nothing moved with %d peers asked", m, maxAskedForMove)
	}
	if at, ok := ps.next(); !ok || !at.After(now) {
		t.Fatalf("next = %v %v after a look at %v, want a later time", at, ok, now)
	}
}

// BenchmarkPromisesRelease: a node beside 49 unproven holders (a crowd all
// connected to each other), each with its probes taken and 60 HAVEs held
// back, looks for HAVEs to release, as each promise check does.
func BenchmarkPromisesRelease(b *testing.B) {
	t0 := time.Unix(1000, 0)
	ps := newPromises(time.Minute, nil)
	for i := range 49 {
		p := peer.ID(fmt.Sprintf("holder-%02d", i))
		for j := range 62 {
			ps.have(p, testLeaf(b, fmt.Sprint(j)), t0)
		}
	}
	if n := len(ps.held); n != 49 {
		b.Fatalf("%d peers with HAVEs held back, want 49", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		if told := ps.release(); len(told) != 0 {
			b.Fatalf("released %d HAVEs of unproven peers with no probe free", len(told))
		}
	}
}

// TestPromisesLiarArriving: a peer due to be named a liar whose block is
// on its way (block bytes came from it lately: a busy holder sending at its
// serving cap) is judged again a haveDeadline later, and named then if no
// block is on its way any more and none was delivered; or, with bytes
// still coming and no block finished, once maxLiarDeferrals judgements
// were put off in a row.
func TestPromisesLiarArriving(t *testing.T) {
	busy, seed := peer.ID("busy"), peer.ID("seed")
	c := testLeaves(t, 2)
	t0 := time.Unix(1000, 0)
	for _, keepsSending := range []bool{false, true} {
		arriving := true
		ps := newPromises(time.Minute, func(p peer.ID, _ time.Time) bool { return p == busy && arriving })
		for _, x := range c {
			ps.have(seed, x, t0)
			ps.have(busy, x, t0)
			ps.asked(busy, x, true, true, t0)
		}
		if l, ls := ps.due(t0.Add(lateFloor), nil); len(l) != 2 || len(ls) != 0 {
			t.Fatalf("due = %v, %v; want two late and no liar yet", l, ls)
		}
		judged := t0.Add(lateFloor + haveDeadline)
		for k := range maxLiarDeferrals {
			if _, ls := ps.due(judged, nil); len(ls) != 0 {
				t.Fatalf("liars = %v while its block is on its way (judgement %d)", ls, k+1)
			}
			if at, ok := ps.next(); !ok || !at.Equal(judged.Add(haveDeadline)) {
				t.Fatalf("next = %v %v, want the judgement again at %v", at, ok, judged.Add(haveDeadline))
			}
			if _, ls := ps.due(judged.Add(haveDeadline-time.Millisecond), nil); len(ls) != 0 {
				t.Fatalf("liars = %v before the judgement again", ls)
			}
			judged = judged.Add(haveDeadline)
			if !keepsSending {
				arriving = false
				break
			}
		}
		if _, ls := ps.due(judged, nil); len(ls) != 1 || ls[0] != busy {
			t.Fatalf("keeps sending %v: liars = %v, want %v", keepsSending, ls, busy)
		}
	}
}
