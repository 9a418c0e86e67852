package fetch

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/internal/dagfile"
)

// The policy's tests: pure functions and a fake clock, no libp2p.

func TestOriginJoins(t *testing.T) {
	t0 := time.Unix(1000, 0)
	pt := 200 * time.Millisecond
	base := joinState{start: t0, lastPeer: t0, peerTimeout: pt, missing: true}
	runJoinCases(t, base, originJoins, []joinCase{
		{"nothing missing", time.Second, func(j *joinState) { j.missing = false }, false, 0},
		{"cold start", 0, func(j *joinState) { j.noProvider = true }, true, pt},
		{"providers all penalised", 0, func(j *joinState) { j.provsPenalised = true }, true, pt},
		// The peers asked said DONT_HAVE of the leaf the reader waits on
		// (a holder dropped a damaged block): the origin at once.
		{"the reader waits on a leaf the peers do not have", 0, func(j *joinState) {
			j.waitSince, j.refused = t0, true
		}, true, pt},
		{"a leaf the peers do not have, the reader does not wait", pt - 1, func(j *joinState) { j.refused = true }, false, pt},
		{"a leaf the peers do not have, in a crowd: peers get peerTimeout", pt - 1, func(j *joinState) {
			j.waitSince, j.refused, j.crowd = t0, true, true
		}, false, pt},
		{"peers get peerTimeout", pt - 1, nil, false, pt},
		{"no peer delivered in time", pt, nil, true, 0},
		{"a peer delivered", pt, func(j *joinState) { j.peerDelivered = true }, false, 0},
		{"peers stalled", 3 * pt, func(j *joinState) {
			j.peerDelivered, j.peerWaiting, j.lastPeer = true, true, t0.Add(2*pt)
		}, true, 0},
		{"peers not yet stalled", 3 * pt, func(j *joinState) {
			j.peerDelivered, j.peerWaiting, j.lastPeer = true, true, t0.Add(2*pt+1)
		}, false, 3*pt + 1},
		{"the reader waited", 5 * pt, func(j *joinState) {
			j.peerDelivered, j.waitSince = true, t0.Add(4*pt)
		}, true, 0},
		{"the reader waits, peers slow", 5 * pt, func(j *joinState) {
			j.peerDelivered, j.waitSince, j.peersSlow = true, t0.Add(5*pt), true
		}, true, 6 * pt},
		{"peers slow, the reader does not wait", 5 * pt, func(j *joinState) {
			j.peerDelivered, j.peersSlow = true, true
		}, false, 0},
		// A peer said HAVE of the first leaf: the origin, at 3 peer
		// timeouts a leaf, would not bring it sooner.
		{"held: peers get peerTimeout and a leaf's origin time", pt, func(j *joinState) {
			j.held, j.leaf = true, 3*pt
		}, false, 4 * pt},
		{"held, no peer delivered in time", 4 * pt, func(j *joinState) {
			j.held, j.leaf = true, 3*pt
		}, true, 0},
		{"held: the reader waiting on the first block gets as long", 3 * pt, func(j *joinState) {
			j.held, j.leaf, j.waitSince = true, 3*pt, t0
		}, false, 4 * pt},
		{"held does not lengthen the reader's wait once a peer delivered", 5 * pt, func(j *joinState) {
			j.held, j.leaf, j.peerDelivered, j.waitSince = true, 3*pt, true, t0.Add(4*pt)
		}, true, 0},
		{"held: peers waited on for the first block get as long", 3 * pt, func(j *joinState) {
			j.held, j.leaf, j.peerWaiting = true, 3*pt, true
		}, false, 4 * pt},
		{"held does not lengthen a stall", 3 * pt, func(j *joinState) {
			j.held, j.leaf, j.peerDelivered, j.peerWaiting, j.lastPeer = true, 3*pt, true, true, t0.Add(2*pt)
		}, true, 0},
	})
}

// joinCase is a case of a rule over the join state: the state base.start
// plus at, edited; the rule's answer; and when the answer changes, after
// base.start (0: nothing changes within the minute).
type joinCase struct {
	name     string
	at       time.Duration
	edit     func(*joinState)
	want     bool
	wantNext time.Duration
}

// runJoinCases checks rule's answer, and the next look it notes, in each
// case.
func runJoinCases(t *testing.T, base joinState, rule func(joinState, *soon) (bool, string), cases []joinCase) {
	t.Helper()
	t0 := base.start
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j := base
			j.now = t0.Add(tc.at)
			if tc.edit != nil {
				tc.edit(&j)
			}
			s := newSoon(j.now)
			if got, why := rule(j, s); got != tc.want {
				t.Errorf("answer %v (%q), want %v", got, why, tc.want)
			}
			want := j.now.Add(time.Minute)
			if tc.wantNext != 0 {
				want = t0.Add(tc.wantNext)
			}
			if !s.next.Equal(want) {
				t.Errorf("next look at %v after the start, want %v", s.next.Sub(t0), want.Sub(t0))
			}
		})
	}
}

// TestOriginJoinsSynctest drives the join rule with a fake clock the way
// the Reader does (look, sleep until the next time it names, look again):
// a provider that delivers nothing makes the origin join exactly
// PeerTimeout after the start; a reader that waits on a stalled peer
// exactly PeerTimeout after it began to wait.
func TestOriginJoinsSynctest(t *testing.T) {
	const pt = 200 * time.Millisecond
	for _, tc := range []struct {
		name string
		edit func(j *joinState, start time.Time)
		want time.Duration
	}{
		{"silent provider", func(*joinState, time.Time) {}, pt},
		{"waiting reader", func(j *joinState, start time.Time) {
			j.peerDelivered, j.waitSince = true, start.Add(350*time.Millisecond)
		}, 350*time.Millisecond + pt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				for {
					j := joinState{now: time.Now(), start: start, lastPeer: start, peerTimeout: pt, missing: true}
					tc.edit(&j, start)
					s := newSoon(j.now)
					if join, _ := originJoins(j, s); join {
						break
					}
					time.Sleep(s.next.Sub(j.now))
				}
				if d := time.Since(start); d != tc.want {
					t.Errorf("the origin joined after %v, want %v", d, tc.want)
				}
			})
		})
	}
}

func TestSlowerThanOrigin(t *testing.T) {
	t0 := time.Unix(1000, 0)
	every := func(d time.Duration) []time.Time {
		var ts []time.Time
		for i := range peerRateWindow {
			ts = append(ts, t0.Add(time.Duration(i)*d))
		}
		return ts
	}
	mibps := float64(dagfile.ChunkSize)
	for _, tc := range []struct {
		name   string
		times  []time.Time
		origin float64
		want   bool
	}{
		{"origin not measured", every(time.Second), 0, false},
		{"too few deliveries", every(time.Second)[:peerRateWindow-1], 10 * mibps, false},
		{"1 MiB/s against 10", every(time.Second), 10 * mibps, true},
		{"10 MiB/s against 10", every(100 * time.Millisecond), 10 * mibps, false},
		{"just over half", every(190 * time.Millisecond), 10 * mibps, false},
		{"just under half", every(210 * time.Millisecond), 10 * mibps, true},
	} {
		if got := slowerThanOrigin(tc.times, tc.origin); got != tc.want {
			t.Errorf("%s: slowerThanOrigin = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func testRoot(t testing.TB, s string) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte(s), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.DagProtobuf, h)
}

func testPeers(n int) []peer.ID {
	ps := make([]peer.ID, n)
	for i := range ps {
		ps[i] = peer.ID(fmt.Sprintf("peer-%03d", i))
	}
	return ps
}

// TestStripeScore: the score is what the package doc tells a browser to
// compute: the first 8 bytes, big-endian, of SHA-256(root || peer || i).
func TestStripeScore(t *testing.T) {
	root := testRoot(t, "site")
	p := testPeers(1)[0]
	for _, i := range []int{0, 1, 255, 1 << 20} {
		buf := append(append(root.Bytes(), []byte(p)...), make([]byte, 8)...)
		binary.BigEndian.PutUint64(buf[len(buf)-8:], uint64(i))
		sum := sha256.Sum256(buf)
		if got, want := stripeScore(root, p, i), binary.BigEndian.Uint64(sum[:8]); got != want {
			t.Errorf("stripeScore(%d) = %x, want %x", i, got, want)
		}
	}
}

// TestStripeOwners: every member computes the same owners whatever order
// the crowd comes in; the leaves split about evenly; a member that joins
// takes leaves only for itself, and one left out (penalised) gives up only
// its own; a stripe of one owns everything.
func TestStripeOwners(t *testing.T) {
	root := testRoot(t, "video")
	ps := testPeers(10)
	const leaves = 1000
	views := make([]*stripe, len(ps))
	for k, self := range ps {
		crowd := append([]peer.ID(nil), ps[k+1:]...)
		crowd = append(crowd, ps[:k]...)
		views[k] = newStripe(root, self, crowd, nil)
	}
	count := map[peer.ID]int{}
	for i := range leaves {
		o := views[0].owner(i)
		count[o]++
		for _, k := range []int{1, 5, 9} {
			if got := views[k].owner(i); got != o {
				t.Fatalf("leaf %d: member %d says %s owns it, member 0 says %s", i, k, got, o)
			}
		}
	}
	for _, p := range ps {
		if n := count[p]; n < leaves/len(ps)*7/10 || n > leaves/len(ps)*13/10 {
			t.Errorf("%s owns %d of %d leaves, want about %d", p, n, leaves, leaves/len(ps))
		}
	}
	fewer := newStripe(root, ps[0], ps[1:9], nil) // ps[9] not yet in the crowd
	out := newStripe(root, ps[0], ps[1:], func(p peer.ID) bool { return p == ps[3] })
	for i := range leaves {
		full := views[0].owner(i)
		if o := fewer.owner(i); o != full && full != ps[9] {
			t.Fatalf("leaf %d: a joining member moved it from %s to %s", i, o, full)
		}
		if o := out.owner(i); o == ps[3] || (full != ps[3] && o != full) {
			t.Fatalf("leaf %d: with %s left out, owner %s (was %s)", i, ps[3], o, full)
		}
	}
	alone := newStripe(root, ps[0], []peer.ID{ps[0]}, nil)
	if !alone.alone() || alone.owner(7) != ps[0] {
		t.Errorf("a stripe of one: alone %v, owner %s", alone.alone(), alone.owner(7))
	}
}

func TestLeafTime(t *testing.T) {
	if got := leafTime(0); got != assumedLeafTime {
		t.Errorf("leafTime(unknown) = %v, want %v", got, assumedLeafTime)
	}
	if got := leafTime(4 * float64(dagfile.ChunkSize)); got != 250*time.Millisecond {
		t.Errorf("leafTime(4 MiB/s) = %v, want 250ms", got)
	}
}

func TestOverdue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const pt, leaf = 200 * time.Millisecond, 800 * time.Millisecond
	for _, tc := range []struct {
		name     string
		a        leafAsk
		at       time.Duration
		want     bool
		wantNext time.Duration // after t0; 0: nothing due
	}{
		{"just asked", leafAsk{since: t0}, 0, false, pt + leaf},
		{"nobody has it yet", leafAsk{since: t0, rank: 1}, pt + leaf - 1, false, pt + leaf},
		{"its owner sent nothing", leafAsk{since: t0, rank: 1}, pt + leaf, true, 0},
		{"third in its owner's queue", leafAsk{since: t0, rank: 3}, pt + 2*leaf, false, pt + 3*leaf},
		{"third, its owner sent nothing", leafAsk{since: t0, rank: 3}, pt + 3*leaf, true, 0},
		{"a peer holds it", leafAsk{since: t0, held: true}, 10 * time.Second, false, 0},
		{"its owner is at work", leafAsk{since: t0, ownerActive: true}, 10 * time.Second, false, 0},
		{"held, the reader waits", leafAsk{since: t0, held: true, waitSince: t0.Add(time.Second)}, time.Second + pt + leaf, false, time.Second + 2*(pt+leaf)},
		{"held, the reader waited too long", leafAsk{since: t0, held: true, waitSince: t0.Add(time.Second)}, time.Second + 2*(pt+leaf), true, 0},
		{"not held, the reader waited too long", leafAsk{since: t0, ownerActive: true, waitSince: t0.Add(time.Second)}, time.Second + pt + leaf, true, 0},
		{"first backup, its owner sent nothing", leafAsk{since: t0, rank: 1, backup: 1}, pt + leaf, true, 0},
		{"second backup waits a wave more", leafAsk{since: t0, rank: 1, backup: 2}, pt + leaf, false, 2 * (pt + leaf)},
		{"second backup, its turn", leafAsk{since: t0, rank: 1, backup: 2}, 2 * (pt + leaf), true, 0},
		{"fourth backup waits 7 generations more", leafAsk{since: t0, rank: 1, backup: 4}, 8*(pt+leaf) - 1, false, 8 * (pt + leaf)},
		{"fourth backup, its wave", leafAsk{since: t0, rank: 1, backup: 4}, 8 * (pt + leaf), true, 0},
		// Peers deliver a leaf every 2 s: a generation is peerTimeout and 2 s.
		{"second backup, slow peers", leafAsk{since: t0, rank: 1, backup: 2, pace: 2 * time.Second}, 2 * (pt + leaf), false, pt + leaf + pt + 2*time.Second},
		{"second backup, slow peers, its turn", leafAsk{since: t0, rank: 1, backup: 2, pace: 2 * time.Second}, pt + leaf + pt + 2*time.Second, true, 0},
		{"first backup: pace does not delay it", leafAsk{since: t0, rank: 1, backup: 1, pace: 2 * time.Second}, pt + leaf, true, 0},
		{"a far backup leaves it to the others", leafAsk{since: t0, rank: 1, backup: 40}, time.Hour, false, 0},
		{"a far backup, the reader waited", leafAsk{since: t0, rank: 1, backup: 40, waitSince: t0.Add(time.Second)}, time.Second + 40*(pt+leaf), true, 0},
		{"third backup, the reader waits", leafAsk{since: t0, ownerActive: true, backup: 3, waitSince: t0.Add(time.Second)}, time.Second + 2*(pt+leaf), false, time.Second + 3*(pt+leaf)},
		{"third backup, held, the reader waited", leafAsk{since: t0, held: true, backup: 3, waitSince: t0.Add(time.Second)}, time.Second + 6*(pt+leaf), true, 0},
		// Peers deliver a leaf every 2 s: the reader waiting on one gives
		// them that pace, not the origin's time for a leaf.
		{"held, slow peers, the reader waits", leafAsk{since: t0, held: true, pace: 2 * time.Second, waitSince: t0.Add(time.Second)}, time.Second + 2*(pt+leaf), false, time.Second + 2*(pt+2*time.Second)},
		{"held, slow peers, the reader waited too long", leafAsk{since: t0, held: true, pace: 2 * time.Second, waitSince: t0.Add(time.Second)}, time.Second + 2*(pt+2*time.Second), true, 0},
		{"its owner at work, slow peers, the reader waits", leafAsk{since: t0, ownerActive: true, pace: 2 * time.Second, waitSince: t0.Add(time.Second)}, time.Second + pt + leaf, false, time.Second + pt + 2*time.Second},
		// An owner not connected to this node: its copy comes through
		// others, farHops generations later.
		{"far owner, first backup waits past a near owner's time", leafAsk{since: t0, rank: 1, backup: 1, far: true}, pt + leaf, false, pt + leaf + 4*(pt+leaf)},
		{"far owner, first backup waits", leafAsk{since: t0, rank: 1, backup: 1, far: true}, pt + leaf + farHops*(pt+leaf) - 1, false, pt + leaf + farHops*(pt+leaf)},
		{"far owner, first backup's turn", leafAsk{since: t0, rank: 1, backup: 1, far: true}, pt + leaf + farHops*(pt+leaf), true, 0},
		{"far owner, the reader waited", leafAsk{since: t0, rank: 1, backup: 1, far: true, waitSince: t0}, pt + leaf, true, 0},
		{"a silent owner's leaf: slow peers do not delay it", leafAsk{since: t0, rank: 1, pace: 2 * time.Second, waitSince: t0}, pt + leaf, true, 0},
		// A holder of the whole content is known and peers deliver: the
		// leaves ahead of the reader are left to the mesh.
		{"in the mesh: not taken ahead of the reader", leafAsk{since: t0, rank: 1, backup: 1, inMesh: true}, time.Hour, false, 0},
		// The reader waiting on it gives the mesh hedgeWaits waves: a
		// holder serving a crowd sends each of them a leaf now and then.
		{"in the mesh, the reader waits", leafAsk{since: t0, rank: 1, inMesh: true, near: true, waitSince: t0.Add(time.Second)}, time.Second + hedgeWaits*(pt+leaf) - 1, false, time.Second + hedgeWaits*(pt+leaf)},
		{"in the mesh, the reader waited", leafAsk{since: t0, rank: 1, inMesh: true, near: true, waitSince: t0.Add(time.Second)}, time.Second + hedgeWaits*(pt+leaf), true, 0},
		{"in the mesh by a far holder, nobody has it, the reader waited", leafAsk{since: t0, rank: 1, inMesh: true, waitSince: t0.Add(time.Second)}, time.Second + pt + leaf, true, 0},
		{"in the mesh, held, the reader waits", leafAsk{since: t0, held: true, inMesh: true, waitSince: t0}, 2*hedgeWaits*(pt+leaf) - 1, false, 2 * hedgeWaits * (pt + leaf)},
		{"in the mesh, a far backup waits its wave", leafAsk{since: t0, backup: 6, inMesh: true, waitSince: t0}, 6*(pt+leaf) - 1, false, 6 * (pt + leaf)},
	} {
		now := t0.Add(tc.at)
		s := newSoon(now)
		if got := overdue(tc.a, now, pt, leaf, s); got != tc.want {
			t.Errorf("%s: overdue = %v, want %v", tc.name, got, tc.want)
		}
		if !tc.want {
			checkNext(t, tc.name, s, t0, tc.wantNext)
		}
	}
}

// TestLeftToMesh: the leaves ahead of a stripe's reader are left to the
// mesh while a holder is known and peers have delivered a block of the
// fetch, or for the first generation while none has.
func TestLeftToMesh(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const gen = time.Second
	for _, tc := range []struct {
		name      string
		holder    bool
		delivered bool
		at        time.Duration // now, after the fetch's start t0
		want      bool
		wantNext  time.Duration // after t0; 0: nothing due
	}{
		{"no holder known", false, true, 0, false, 0},
		{"a holder, the fetch just began", true, false, 0, true, gen},
		{"a holder, nothing delivered in nearly a generation", true, false, gen - 1, true, gen},
		{"a holder, nothing delivered in a generation", true, false, gen, false, 0},
		{"a holder, peers delivered", true, true, time.Hour, true, 0},
	} {
		now := t0.Add(tc.at)
		s := newSoon(now)
		if got := leftToMesh(tc.holder, tc.delivered, t0, now, gen, s); got != tc.want {
			t.Errorf("%s: leftToMesh = %v, want %v", tc.name, got, tc.want)
		}
		checkNext(t, tc.name, s, t0, tc.wantNext)
	}
}

// TestSilentMemberSynctest is the issue's "a node that announces a fetch
// and sends nothing delays no one beyond peer timeout + origin time", on
// the policy alone: the leaves a silent member owns are asked of the
// origin exactly PeerTimeout plus the origin's time for them after they
// were asked of peers, and a leaf some peer holds is not.
func TestSilentMemberSynctest(t *testing.T) {
	const pt = 200 * time.Millisecond
	rate := 2 * float64(dagfile.ChunkSize) // the origin gives a request 2 MiB/s
	synctest.Test(t, func(t *testing.T) {
		asked := time.Now()
		held := leafAsk{since: asked, held: true}
		first, second := leafAsk{since: asked, rank: 1}, leafAsk{since: asked, rank: 2}
		var firstAt, secondAt time.Duration
		for secondAt == 0 {
			now := time.Now()
			s := newSoon(now)
			if overdue(held, now, pt, leafTime(rate), s) {
				t.Fatalf("a leaf a peer holds went to the origin after %v", now.Sub(asked))
			}
			if firstAt == 0 && overdue(first, now, pt, leafTime(rate), s) {
				firstAt = now.Sub(asked)
			}
			if overdue(second, now, pt, leafTime(rate), s) {
				secondAt = now.Sub(asked)
			}
			time.Sleep(s.next.Sub(now))
		}
		if firstAt != pt+500*time.Millisecond || secondAt != pt+time.Second {
			t.Errorf("the silent member's leaves went to the origin after %v and %v, want %v and %v",
				firstAt, secondAt, pt+500*time.Millisecond, pt+time.Second)
		}
	})
}

// TestStripePlace: every member's place in a leaf's ranking is what
// sorting the members by score gives, the owner first, and the places of
// all members are 0 to len-1 once each.
func TestStripePlace(t *testing.T) {
	root := testRoot(t, "place")
	crowd := testPeers(7)
	for leaf := range 20 {
		seen := make(map[int]bool)
		for _, self := range crowd {
			st := newStripe(root, self, crowd, nil)
			k := st.place(leaf)
			if seen[k] {
				t.Fatalf("leaf %d: place %d given twice", leaf, k)
			}
			seen[k] = true
			if (k == 0) != (st.owner(leaf) == self) {
				t.Errorf("leaf %d: %s has place %d, owner %s", leaf, self, k, st.owner(leaf))
			}
			higher := 0
			for _, p := range crowd {
				if sc, mine := stripeScore(root, p, leaf), stripeScore(root, self, leaf); sc > mine || sc == mine && p > self {
					higher++
				}
			}
			if k != higher {
				t.Errorf("leaf %d: place %d, want %d", leaf, k, higher)
			}
		}
		if len(seen) != len(crowd) {
			t.Errorf("leaf %d: %d places for %d members", leaf, len(seen), len(crowd))
		}
	}
	if st := makeStripe(root, crowd[0], crowd[1:], nil, false); st.place(0) != len(crowd)-1 {
		t.Errorf("a node outside the stripe has place %d, want %d", st.place(0), len(crowd)-1)
	}
}

// TestHeadStart: the member that began first, alone, leads the leaves it
// can have taken from the origin before the next node began; nobody leads
// when two began at once, when the first is not a member, or when the
// origin's time for a leaf is not known.
func TestHeadStart(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ps := testPeers(3)
	const leaf = 100 * time.Millisecond
	for _, tc := range []struct {
		name      string
		starts    []fetchStart
		conc      int
		wantLead  peer.ID
		wantLeads int
	}{
		{"one began 2 s before the others", []fetchStart{{ps[0], t0.Add(2 * time.Second), true}, {ps[1], t0, true}, {ps[2], t0.Add(3 * time.Second), true}}, 1, ps[1], 20},
		{"at 4 requests at once", []fetchStart{{ps[0], t0.Add(2 * time.Second), true}, {ps[1], t0, true}}, 4, ps[1], 80},
		{"less than a leaf ahead", []fetchStart{{ps[0], t0.Add(leaf - 1), true}, {ps[1], t0, true}}, 1, "", 0},
		{"began together", []fetchStart{{ps[0], t0, true}, {ps[1], t0, true}}, 1, "", 0},
		{"the first is no member", []fetchStart{{ps[0], t0, false}, {ps[1], t0.Add(time.Second), true}}, 1, "", 0},
		{"alone", []fetchStart{{ps[0], t0, true}}, 1, "", 0},
	} {
		st := newStripe(testRoot(t, "lead"), ps[0], ps, nil)
		st.withLead(headStart(tc.starts, leaf, tc.conc))
		if st.lead != tc.wantLead || st.leads != tc.wantLeads {
			t.Errorf("%s: lead %q of %d leaves, want %q of %d", tc.name, st.lead, st.leads, tc.wantLead, tc.wantLeads)
		}
	}
	if _, n := headStart([]fetchStart{{ps[0], t0, true}, {ps[1], t0.Add(time.Second), true}}, 0, 1); n != 0 {
		t.Errorf("no leaf time: a lead of %d leaves", n)
	}
}

// TestStripeLead: the lead owns the leaves of its head start in every
// member's view and is placed first in them, the others after it in their
// usual order; past its head start the stripe is as without a lead.
func TestStripeLead(t *testing.T) {
	root := testRoot(t, "lead")
	crowd := testPeers(5)
	lead, leads := crowd[2], 10
	for leaf := range 30 {
		seen := make(map[int]bool)
		for _, self := range crowd {
			st := newStripe(root, self, crowd, nil)
			plain := newStripe(root, self, crowd, nil)
			st.withLead(lead, leads)
			k := st.place(leaf)
			seen[k] = true
			switch {
			case leaf >= leads:
				if st.owner(leaf) != plain.owner(leaf) || k != plain.place(leaf) {
					t.Errorf("leaf %d past the head start: owner %s place %d, want %s %d", leaf, st.owner(leaf), k, plain.owner(leaf), plain.place(leaf))
				}
			case st.owner(leaf) != lead:
				t.Errorf("leaf %d: owner %s, want the lead", leaf, st.owner(leaf))
			case self == lead && k != 0, self != lead && k == 0:
				t.Errorf("leaf %d: %s placed %d", leaf, self, k)
			}
		}
		if len(seen) != len(crowd) {
			t.Errorf("leaf %d: %d places for %d members", leaf, len(seen), len(crowd))
		}
	}
	st := newStripe(root, crowd[0], crowd, nil)
	if st.withLead(testPeers(7)[6], 10); st.lead != "" || st.owner(0) == testPeers(7)[6] {
		t.Errorf("a lead that is no member leads %d leaves", st.leads)
	}
}

func TestReask(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const every = 300 * time.Millisecond
	for _, tc := range []struct {
		name     string
		asked    time.Duration // after t0
		next     time.Duration // after t0; the fetch's next re-ask allowed
		at       time.Duration
		held     bool
		want     bool
		wantNext time.Duration // after t0; 0: nothing due
	}{
		{"just asked", 0, 0, 100 * time.Millisecond, false, false, every},
		{"asked an interval ago", 0, 0, every, false, true, 0},
		{"someone holds it", 0, 0, time.Second, true, false, 0},
		{"the fetch re-asked lately", 0, 500 * time.Millisecond, 400 * time.Millisecond, false, false, 500 * time.Millisecond},
	} {
		now := t0.Add(tc.at)
		s := newSoon(now)
		if got := reask(t0.Add(tc.asked), t0.Add(tc.next), now, every, tc.held, s); got != tc.want {
			t.Errorf("%s: reask = %v, want %v", tc.name, got, tc.want)
		}
		checkNext(t, tc.name, s, t0, tc.wantNext)
	}
}

// TestStripeHearing: a node that announced its fetch counts itself in the
// stripe only PeerTimeout after the announcement (the others must have
// heard of it first); until then, knowing of others, it owns nothing, and
// knowing of none, it owns everything (a cold start is not delayed). A
// fetch that is not announced counts itself in at once.
func TestStripeHearing(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const pt = 200 * time.Millisecond
	root := testRoot(t, "page")
	ps := testPeers(3)
	self, others := ps[0], ps[1:]
	for _, tc := range []struct {
		name      string
		announces bool
		announced time.Duration // after t0; -1: not yet
		at        time.Duration
		want      bool
		wantNext  time.Duration // after t0; 0: nothing due
	}{
		{"not announced (no Advertiser)", false, -1, 0, true, 0},
		{"announcement not sent yet", true, -1, 0, false, 0},
		{"just announced", true, 0, pt - 1, false, pt},
		{"heard", true, 0, pt, true, 0},
	} {
		var announced time.Time
		if tc.announced >= 0 {
			announced = t0.Add(tc.announced)
		}
		now := t0.Add(tc.at)
		s := newSoon(now)
		got := heard(tc.announces, announced, now, pt, s)
		if got != tc.want {
			t.Errorf("%s: heard = %v, want %v", tc.name, got, tc.want)
		}
		checkNext(t, tc.name, s, t0, tc.wantNext)
	}
	unheard := makeStripe(root, self, others, nil, false)
	full := makeStripe(root, self, others, nil, true)
	if unheard.alone() || full.alone() {
		t.Fatalf("a stripe with others is alone: unheard %v, full %v", unheard.alone(), full.alone())
	}
	mine := 0
	for i := range 300 {
		if o := unheard.owner(i); o == self {
			t.Fatalf("leaf %d: a node not yet heard of owns it", i)
		}
		if full.owner(i) == self {
			mine++
		} else if full.owner(i) != unheard.owner(i) {
			t.Fatalf("leaf %d: counting this node in moved it from %s to %s", i, unheard.owner(i), full.owner(i))
		}
	}
	if mine < 60 || mine > 140 {
		t.Errorf("heard, the node owns %d of 300 leaves, want about 100", mine)
	}
	if cold := makeStripe(root, self, nil, nil, false); !cold.alone() {
		t.Errorf("a node that knows of no other is not alone before it is heard")
	}
	if gone := makeStripe(root, self, others[:1], func(peer.ID) bool { return true }, false); !gone.alone() {
		t.Errorf("a node whose only other member is penalised is not alone")
	}
}

func TestLookAgain(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name           string
		known, waiting bool
		at             time.Duration // after the last lookup, at t0
		want           bool
		wantNext       time.Duration // after t0; 0: nothing due
	}{
		{"no provider known", false, true, time.Minute, false, 0},
		{"nothing waits on peers", true, false, time.Minute, false, 0},
		{"looked up lately", true, true, time.Second, false, provRefresh},
		{"due", true, true, provRefresh, true, 0},
		{"long due", true, true, time.Minute, true, 0},
	} {
		now := t0.Add(tc.at)
		s := newSoon(now)
		if got := lookAgain(tc.known, tc.waiting, t0, now, s); got != tc.want {
			t.Errorf("%s: lookAgain = %v, want %v", tc.name, got, tc.want)
		}
		checkNext(t, tc.name, s, t0, tc.wantNext)
	}
}

// TestLookAgainSynctest: a fetch that waits on peers for 7 s looks its
// providers up again at 2, 4 and 6 s, and not once it stops waiting.
func TestLookAgainSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		last := start
		var at []time.Duration
		for time.Since(start) < 9*time.Second {
			now := time.Now()
			waiting := now.Sub(start) < 7*time.Second
			s := newSoon(now)
			if lookAgain(true, waiting, last, now, s) {
				last = now
				at = append(at, now.Sub(start))
			}
			time.Sleep(min(s.next.Sub(now), time.Second))
		}
		want := []time.Duration{provRefresh, 2 * provRefresh, 3 * provRefresh}
		if !slices.Equal(at, want) {
			t.Errorf("looked again at %v, want %v", at, want)
		}
	})
}

// TestAddrlessPoll: a fetch waiting for the addresses of providers known
// by ID only looks for them every 50 ms for the first second after noting
// one, then less and less often, at least once a second; noting another
// starts again at 50 ms.
func TestAddrlessPoll(t *testing.T) {
	var gaps []time.Duration
	last, waited := time.Duration(0), time.Duration(0)
	for range 26 {
		last = addrlessPoll(last, waited)
		waited += last
		gaps = append(gaps, last)
	}
	ms := time.Millisecond
	want := slices.Repeat([]time.Duration{50 * ms}, 20)
	want = append(want, 100*ms, 200*ms, 400*ms, 800*ms, time.Second, time.Second)
	if !slices.Equal(gaps, want) {
		t.Errorf("waits %v, want %v", gaps, want)
	}
	if got := addrlessPoll(0, 5*time.Second); got != addrlessFirst {
		t.Errorf("after a provider is noted: %v, want %v", got, addrlessFirst)
	}
}

// checkNext checks when s says to look again: at t0 plus wantNext, or,
// with wantNext 0, nothing due (s's minute on).
func checkNext(t *testing.T, name string, s *soon, t0 time.Time, wantNext time.Duration) {
	t.Helper()
	want := s.now.Add(time.Minute)
	if wantNext != 0 {
		want = t0.Add(wantNext)
	}
	if !s.next.Equal(want) {
		t.Errorf("%s: next look at %v, want %v", name, s.next.Sub(t0), want.Sub(t0))
	}
}

func TestAfterPeers(t *testing.T) {
	const pt, stall = 200 * time.Millisecond, 5 * time.Second
	for _, tc := range []struct {
		pace, want time.Duration
	}{
		{0, pt},                     // no pace known
		{50 * time.Millisecond, pt}, // fast peers: at least peerTimeout
		{300 * time.Millisecond, 600 * time.Millisecond}, // twice the pace
		{10 * time.Second, stall / 2},                    // at most half of StallTimeout
	} {
		if got := afterPeers(pt, tc.pace, stall); got != tc.want {
			t.Errorf("afterPeers(pace %v) = %v, want %v", tc.pace, got, tc.want)
		}
	}
	t0 := time.Unix(1000, 0)
	if got := peerPace([]time.Time{t0}); got != 0 {
		t.Errorf("peerPace of one delivery = %v, want 0", got)
	}
	times := []time.Time{t0, t0.Add(100 * time.Millisecond), t0.Add(400 * time.Millisecond), t0.Add(600 * time.Millisecond)}
	if got := peerPace(times); got != 200*time.Millisecond {
		t.Errorf("peerPace = %v, want 200ms (600ms over 3 gaps)", got)
	}
}

// TestOriginJoinsAtPeersPace: once peers deliver, the reader waiting and
// peers stalling are judged against twice the peers' own pace, not
// against PeerTimeout alone.
func TestOriginJoinsAtPeersPace(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const pt = 200 * time.Millisecond
	j := joinState{start: t0, lastPeer: t0, peerTimeout: pt, stallTimeout: 5 * time.Second, missing: true,
		peerDelivered: true, pace: 400 * time.Millisecond, waitSince: t0}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{pt, false}, {799 * time.Millisecond, false}, {800 * time.Millisecond, true}} {
		j.now = t0.Add(tc.at)
		s := newSoon(j.now)
		if got, why := originJoins(j, s); got != tc.want || got && why != joinWaited {
			t.Errorf("at %v: originJoins = %v (%q), want %v", tc.at, got, why, tc.want)
		}
		if !tc.want && !s.next.Equal(t0.Add(800*time.Millisecond)) {
			t.Errorf("at %v: next look %v after the start, want 800ms", tc.at, s.next.Sub(t0))
		}
	}
	j.waitSince, j.peerWaiting, j.now = time.Time{}, true, t0.Add(800*time.Millisecond)
	if got, why := originJoins(j, newSoon(j.now)); !got || why != joinStalled {
		t.Errorf("peers silent for twice their pace: originJoins = %v (%q), want a stall", got, why)
	}
}

func TestHedgesOnly(t *testing.T) {
	for _, why := range []string{joinNoDelivery, joinStalled, joinWaited, joinSlow, joinRefused} {
		if !hedgesOnly(why, true) {
			t.Errorf("%q with a holder serving: the origin takes every leaf, want a per-leaf hedge", why)
		}
		if hedgesOnly(why, false) {
			t.Errorf("%q with no holder serving: a per-leaf hedge, want every leaf", why)
		}
	}
	for _, why := range []string{joinNoProvider, joinPenalised} {
		if hedgesOnly(why, true) {
			t.Errorf("%q: a per-leaf hedge, want every leaf: the peers cannot serve", why)
		}
	}
}

func TestHedgeLeaf(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const pt = 200 * time.Millisecond
	base := joinState{start: t0, lastPeer: t0, peerTimeout: pt, stallTimeout: 5 * time.Second,
		missing: true, peerDelivered: true, waitSince: t0, crowd: true}
	hedge := func(j joinState, s *soon) (bool, string) { return hedgeLeaf(j, s), "" }
	runJoinCases(t, base, hedge, []joinCase{
		{"the reader does not wait", time.Minute, func(j *joinState) { j.waitSince = time.Time{} }, false, 0},
		{"peers slower than the origin: not before the origin's time for the leaf", pt/4 - 1, func(j *joinState) { j.peersSlow, j.leaf = true, pt/4 }, false, pt / 4},
		{"peers slower than the origin: after the origin's time for the leaf", pt / 4, func(j *joinState) { j.peersSlow, j.leaf = true, pt/4 }, true, 0},
		{"no crowd, the peers do not have it: at once", 0, func(j *joinState) { j.crowd, j.refused = false, true }, true, 0},
		{"in a crowd the peers' DONT_HAVE is not final: hedgeWaits peer waits", pt, func(j *joinState) { j.refused = true }, false, hedgeWaits * pt},
		{"the reader gets hedgeWaits peer waits", hedgeWaits*pt - 1, nil, false, hedgeWaits * pt},
		{"hedged after hedgeWaits peer waits", hedgeWaits * pt, nil, true, 0},
		{"no crowd, a later leaf came: hedged after one peer wait", pt, func(j *joinState) { j.crowd, j.skipped = false, true }, true, 0},
		{"no crowd, a later leaf came: not before", pt - 1, func(j *joinState) { j.crowd, j.skipped = false, true }, false, pt},
		{"a later leaf came in a crowd: hedgeWaits peer waits", pt, func(j *joinState) { j.skipped = true }, false, hedgeWaits * pt},
		{"no crowd, nothing skipped: hedgeWaits peer waits", pt, func(j *joinState) { j.crowd = false }, false, hedgeWaits * pt},
		{"at the peers' pace", 7 * time.Second / 4, func(j *joinState) {
			j.pace = 700 * time.Millisecond // 1.4s a leaf; hedgeWaits times that, at most 2.5s
		}, false, 2500 * time.Millisecond},
		{"never longer than half of StallTimeout", 2500 * time.Millisecond, func(j *joinState) {
			j.pace = time.Second
		}, true, 0},
		{"before any peer delivered: the first block's time", pt + pt/2 - 1, func(j *joinState) {
			j.peerDelivered, j.held, j.leaf = false, true, pt/2
		}, false, pt + pt/2},
		{"no first block in the first block's time", pt + pt/2, func(j *joinState) {
			j.peerDelivered, j.held, j.leaf = false, true, pt/2
		}, true, 0},
	})
}

// TestTakesOver: a hedging origin takes every leaf once the leaves asked of
// peers have got nothing for hedgeWait, not at a pause between bursts.
func TestTakesOver(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const pt = 200 * time.Millisecond
	j := joinState{start: t0, lastPeer: t0, peerTimeout: pt, stallTimeout: 5 * time.Second,
		missing: true, peerDelivered: true, peerWaiting: true, crowd: true}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{pt, false}, {hedgeWaits*pt - 1, false}, {hedgeWaits * pt, true}} {
		j.now = t0.Add(tc.at)
		s := newSoon(j.now)
		if got := takesOver(j, s); got != tc.want {
			t.Errorf("peers silent for %v: takesOver = %v, want %v", tc.at, got, tc.want)
		}
		if !tc.want && !s.next.Equal(t0.Add(hedgeWaits*pt)) {
			t.Errorf("peers silent for %v: next look %v after t0, want %v", tc.at, s.next.Sub(t0), hedgeWaits*pt)
		}
	}
	j.peerWaiting, j.now = false, t0.Add(time.Minute)
	if takesOver(j, newSoon(j.now)) {
		t.Error("nothing asked of peers: takesOver = true, want false")
	}
}

// TestHedgesAgain: an origin that took over from hedging goes back to
// hedging once a holder serves and a peer has delivered since it took
// over; not on an older delivery, nor with no holder serving, nor when it
// never took over.
func TestHedgesAgain(t *testing.T) {
	t0 := time.Unix(1000, 0)
	took := t0.Add(time.Second)
	for _, tc := range []struct {
		name     string
		lastPeer time.Time
		serving  bool
		tookOver time.Time
		want     bool
	}{
		{"a delivery since, a holder serving", took.Add(time.Millisecond), true, took, true},
		{"the last delivery before it took over", took.Add(-time.Millisecond), true, took, false},
		{"a delivery at the moment it took over", took, true, took, false},
		{"no holder serving", took.Add(time.Millisecond), false, took, false},
		{"never took over", took.Add(time.Millisecond), true, time.Time{}, false},
	} {
		j := joinState{now: took.Add(time.Second), start: t0, lastPeer: tc.lastPeer, serving: tc.serving, missing: true, peerDelivered: true}
		if got := hedgesAgain(j, tc.tookOver); got != tc.want {
			t.Errorf("%s: hedgesAgain = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestCrowdJudged: a fetch judges its crowd members once the reader has
// waited StallTimeout on a leaf with the origin on, counted from the later
// of the two, and not while the reader does not wait or the origin is off.
func TestCrowdJudged(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const stall = 5 * time.Second
	for _, tc := range []struct {
		name             string
		on               bool
		origin, wait, at time.Duration
		dry              time.Duration // waits ended while no peer had delivered
		want             bool
		wantNext         time.Duration
	}{
		{"origin off", false, 0, 0, time.Minute, 0, false, 0},
		{"the reader does not wait", true, 0, -1, time.Minute, 0, false, 0},
		{"waited less than stall", true, 0, time.Second, 5 * time.Second, 0, false, 6 * time.Second},
		{"waited stall", true, 0, time.Second, 6 * time.Second, 0, true, 0},
		{"the origin joined after the wait began", true, 3 * time.Second, 0, 7 * time.Second, 0, false, 8 * time.Second},
		{"stall after the origin joined", true, 3 * time.Second, 0, 8 * time.Second, 0, true, 0},
		// The reader waited 4 s on leaves before this one, nothing coming
		// from peers: 1 s more on this one is stall in all.
		{"kept waiting leaf after leaf", true, 0, 6 * time.Second, 6*time.Second + 999*time.Millisecond, 4 * time.Second, false, 7 * time.Second},
		{"kept waiting leaf after leaf, stall in all", true, 0, 6 * time.Second, 7 * time.Second, 4 * time.Second, true, 0},
		{"waited stall before, waiting again", true, 0, 6 * time.Second, 6 * time.Second, stall, true, 0},
		{"waited stall before, not waiting now", true, 0, -1, 6 * time.Second, stall, false, 0},
	} {
		wait := time.Time{}
		if tc.wait >= 0 {
			wait = t0.Add(tc.wait)
		}
		now := t0.Add(tc.at)
		s := newSoon(now)
		if got := crowdJudged(tc.on, t0.Add(tc.origin), wait, tc.dry, now, stall, s); got != tc.want {
			t.Errorf("%s: crowdJudged = %v, want %v", tc.name, got, tc.want)
		}
		if !tc.want {
			checkNext(t, tc.name, s, t0, tc.wantNext)
		}
	}
}

// TestCrowdJudgedSynctest: on a fake clock, a fetch whose reader starts
// waiting as the origin joins judges its crowd exactly StallTimeout later,
// and a member is kept after that only with a sign of life.
func TestCrowdJudgedSynctest(t *testing.T) {
	const stall = 5 * time.Second
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at time.Duration
		for at == 0 {
			now := time.Now()
			s := newSoon(now)
			if crowdJudged(true, start, start, 0, now, stall, s) {
				at = now.Sub(start)
				break
			}
			time.Sleep(s.next.Sub(now))
		}
		if at != stall {
			t.Errorf("judged after %v, want %v", at, stall)
		}
	})
	for _, tc := range []struct {
		m    memberSigns
		want bool
	}{
		{memberSigns{}, false},
		{memberSigns{linked: true}, true},
		{memberSigns{useful: true}, true},
		{memberSigns{alive: true}, true},
	} {
		if got := memberKept(tc.m); got != tc.want {
			t.Errorf("memberKept(%+v) = %v, want %v", tc.m, got, tc.want)
		}
	}
}

// TestCrowdShowsLife: a crowd is taken as real when a member known only by
// gossip owns a leaf a peer has said HAVE of or sent; connected or useful
// members' signs do not vouch for the others.
func TestCrowdShowsLife(t *testing.T) {
	for _, tc := range []struct {
		name string
		ms   []memberSigns
		want bool
	}{
		{"no members", nil, false},
		{"all silent", []memberSigns{{}, {}, {}}, false},
		{"a connected member alive", []memberSigns{{}, {linked: true, alive: true}}, false},
		{"a useful member alive", []memberSigns{{useful: true, alive: true}, {}}, false},
		{"a gossip-only member alive", []memberSigns{{}, {alive: true}, {linked: true}}, true},
	} {
		if got := crowdShowsLife(tc.ms); got != tc.want {
			t.Errorf("%s: crowdShowsLife = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPeerHedges: the leaf the reader waits on is asked directly of a
// holder serving the fetch once the reader has waited on it, since it was
// last asked, for peerTimeout, whatever the peers' pace; never while the
// reader does not wait.
func TestPeerHedges(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const pt = 200 * time.Millisecond
	base := joinState{start: t0, lastPeer: t0, peerTimeout: pt, stallTimeout: 5 * time.Second,
		missing: true, peerDelivered: true, waitSince: t0}
	asked := t0 // when the leaf was last asked of peers
	rule := func(j joinState, s *soon) (bool, string) {
		return peerHedges(j.now, j.waitSince, asked, j.peerTimeout, s), ""
	}
	runJoinCases(t, base, rule, []joinCase{
		{"the reader does not wait", time.Minute, func(j *joinState) { j.waitSince = time.Time{} }, false, 0},
		{"waited less than peerTimeout", pt - 1, nil, false, pt},
		{"waited peerTimeout", pt, nil, true, 0},
		{"peers keep a slow pace: still peerTimeout", pt, func(j *joinState) { j.pace = time.Second }, true, 0},
		{"before any peer delivered: peerTimeout", pt, func(j *joinState) {
			j.peerDelivered, j.held, j.leaf = false, true, pt
		}, true, 0},
	})
	// A leaf asked again after the reader began to wait is timed from then.
	asked = t0.Add(time.Second)
	runJoinCases(t, base, rule, []joinCase{
		{"asked again later: timed from then", time.Second + pt - 1, nil, false, time.Second + pt},
		{"asked again later: peerTimeout after", time.Second + pt, nil, true, 0},
	})
}

// TestPeerHedgesSynctest drives peerHedges with a fake clock the way the
// Reader does: the leaf goes to the serving holder exactly a peer wait
// after the reader began to wait on it.
func TestPeerHedgesSynctest(t *testing.T) {
	const pt = 200 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		waitSince := start.Add(350 * time.Millisecond)
		for {
			now, waiting := time.Now(), time.Time{}
			if !now.Before(waitSince) {
				waiting = waitSince
			}
			s := newSoon(now)
			if peerHedges(now, waiting, start, pt, s) {
				break
			}
			next := s.next
			if waiting.IsZero() {
				next = waitSince // the reader's Read wakes the Reader
			}
			time.Sleep(next.Sub(now))
		}
		if d := time.Since(start); d != 350*time.Millisecond+pt {
			t.Errorf("asked of the serving holder after %v, want %v", d, 350*time.Millisecond+pt)
		}
	})
}
