package fetch

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/internal/dagfile"
)

// The fetch's policy: when the origin joins, which leaves a node takes
// from the origin when others fetch the same content (striping), when a
// leaf left to another is taken from the origin after all, and when peers
// count as slower than the origin. Everything here is a pure function of
// the state it is given and the time: the Reader (schedule.go) gathers the
// state under its lock, asks, and carries the answer out; the tests
// (policy_test.go) drive it with a fake clock.

// soon collects the earliest time after now at which a rule's answer
// changes, which is when the Reader must look again.
type soon struct {
	now, next time.Time
}

func newSoon(now time.Time) *soon { return &soon{now: now, next: now.Add(time.Minute)} }

// at notes that something changes at t.
func (s *soon) at(t time.Time) {
	if t.After(s.now) && t.Before(s.next) {
		s.next = t
	}
}

// reached reports whether now is at or past due; if not, it notes due.
func (s *soon) reached(now, due time.Time) bool {
	if now.Before(due) {
		s.at(due)
		return false
	}
	return true
}

// joinState is what decides whether the origin joins a fetch that has
// not asked it yet.
type joinState struct {
	now, start time.Time
	// lastPeer is the last delivery from a peer (start if none); waitSince
	// when the reader began to wait on the leaf at its position (zero: it
	// does not wait).
	lastPeer, waitSince time.Time
	peerTimeout         time.Duration
	// missing: a leaf in the window has not arrived; peerWaiting: one of
	// those is asked of peers.
	missing, peerWaiting bool
	// noProvider: no peer is known to hold the content; provsPenalised:
	// every provider known has been penalised; peerDelivered: some peer has
	// delivered a leaf of it; peersSlow: peers deliver at under half the
	// origin's rate (slowerThanOrigin).
	noProvider, provsPenalised, peerDelivered, peersSlow bool
	// held: a peer has said HAVE of the first leaf the window misses (it
	// is on its way), or a provider that holds the content has lately sent
	// this node blocks or HAVEs (it is up, only busy); leaf is the
	// origin's time for one leaf (leafTime). Peers then get leaf longer
	// for the first block before the origin joins: the origin, asked
	// then, would bring it no sooner.
	held bool
	leaf time.Duration
	// serving: a provider that holds the content, not one of the crowd
	// still fetching it, has sent this node blocks or HAVEs within
	// stallTimeout (holderDeliveringLocked; then held too).
	serving bool
	// crowd: others are known to fetch the same content (Config.Crowd);
	// skipped: the holder asked directly for the leaf the reader waits on
	// has sent later leaves of the window instead (skippedLocked);
	// refused: every peer asked for the leaf the reader waits on has
	// answered, with DONT_HAVE, and no peer's HAVE of it stands
	// (guard.refused; gathered only when no crowd is known).
	crowd, skipped, refused bool
	// pace is the recent time between leaves from peers (peerPace; 0:
	// not known), stallTimeout Config.StallTimeout. Once peers deliver,
	// they count as stalled, and the reader as kept waiting, only after
	// twice their own pace (see afterPeers).
	pace, stallTimeout time.Duration
}

// afterPeers is how long peers that have delivered get for the next leaf
// before they count as stalled or as keeping the reader waiting: twice the
// pace at which they have delivered, at least peerTimeout and at most half
// of stallTimeout. A busy holder serving a crowd sends each of its fetchers
// a leaf every few hundred milliseconds; judged against peerTimeout alone,
// every reader of a fast-reading crowd hedged at the origin on the first
// such gap and then took most of the file from it (the peer deadline
// adapts to what the mesh has shown: DESIGN.md). Peers slower than the
// origin are a rule of their own (slowerThanOrigin).
func afterPeers(peerTimeout, pace, stallTimeout time.Duration) time.Duration {
	return max(peerTimeout, min(2*pace, stallTimeout/2))
}

// peerPace is the mean time between the peer deliveries at times (oldest
// first), 0 with fewer than two.
func peerPace(times []time.Time) time.Duration {
	if len(times) < 2 {
		return 0
	}
	return times[len(times)-1].Sub(times[0]) / time.Duration(len(times)-1)
}

// first is how long peers get for the first block: peerTimeout, and the
// origin's time for a leaf besides when held.
func (j joinState) first() time.Duration {
	if j.held {
		return j.peerTimeout + j.leaf
	}
	return j.peerTimeout
}

// wait is how long peers get for the next leaf, the reader waiting or not:
// afterPeers once a peer has delivered, before that the first block's
// time.
func (j joinState) wait() time.Duration {
	if !j.peerDelivered {
		return j.first()
	}
	return afterPeers(j.peerTimeout, j.pace, j.stallTimeout)
}

// originJoins reports whether the origin joins now and why, and notes in
// s when the answer may change. The rules, in order:
//   - no provider known: at once (a cold start costs what a plain request
//     does);
//   - every provider known has been penalised: at once;
//   - the reader waits on a leaf the peers asked said they do not have,
//     none said they have, and no crowd is known: at once (a holder that
//     dropped a damaged block; in a crowd, a member still fetching says
//     DONT_HAVE of what it will have and send);
//   - no peer delivered within peerTimeout of the start, or peerTimeout
//     plus the origin's time for a leaf when a peer has said HAVE of the
//     first leaf missing or a holder has lately served this node (the
//     origin, asked then, would bring it no sooner, and in a crowd the
//     origin is shared);
//   - the leaves asked of peers got nothing for afterPeers (peers stalled);
//   - the reader has waited afterPeers on one leaf;
//   - the reader waits and peers are slower than half the origin's share
//     (slowerThanOrigin, Fetcher.originShare).
func originJoins(j joinState, s *soon) (bool, string) {
	if !j.missing {
		return false, ""
	}
	first, wait := j.first(), j.wait()
	if !j.peerDelivered {
		s.at(j.start.Add(first))
	}
	if j.peerWaiting {
		s.at(j.lastPeer.Add(wait))
	}
	waits := !j.waitSince.IsZero()
	if waits {
		s.at(j.waitSince.Add(wait))
	}
	switch {
	case j.noProvider:
		return true, joinNoProvider
	case j.provsPenalised:
		return true, joinPenalised
	case waits && j.lacking():
		return true, joinRefused
	case !j.peerDelivered && j.now.Sub(j.start) >= first:
		return true, joinNoDelivery
	case j.peerWaiting && j.now.Sub(j.lastPeer) >= wait:
		return true, joinStalled
	case waits && j.now.Sub(j.waitSince) >= wait:
		return true, joinWaited
	case waits && j.peersSlow:
		return true, joinSlow
	}
	return false, ""
}

// Why the origin joins (originJoins).
const (
	joinNoProvider = "no provider known"
	joinPenalised  = "every provider penalised"
	joinNoDelivery = "no peer delivered in time"
	joinStalled    = "peers stalled"
	joinWaited     = "the reader waited"
	joinSlow       = "peers slower than the origin"
	joinRefused    = "the peers asked do not have the leaf"
)

// lacking reports whether the leaf the reader waits on is one the peers
// asked said they do not have, none said they have, and no crowd is known
// to be fetching (whose members say DONT_HAVE of what they are fetching;
// a refusal from a peer seen fetching it, since done, does not count
// either: Reader.waitedRefusedLocked).
func (j joinState) lacking() bool { return j.refused && !j.crowd }

// hedgesOnly reports whether the origin, joining for why, only hedges
// the leaf the reader waits on (hedgeLeaf) rather than taking every leaf
// it may: when a holder of the content serves this fetch (serving,
// joinState) and the peers are only late or slower than the origin, not
// gone. In a crowd the stripe still says which member hedges a leaf (its
// owner; the others once it is overdue). Slow peers are hedged per leaf,
// not per file (DESIGN.md): a fetch beside a busy seed took, once the
// origin joined, most of its leaves from the origin while the seed went on
// sending them too.
func hedgesOnly(why string, serving bool) bool {
	return serving && (why == joinNoDelivery || why == joinStalled || why == joinWaited || why == joinSlow || why == joinRefused)
}

// hedgeLeaf reports whether the origin, hedging per leaf, takes the leaf
// the reader has waited on since j.waitSince (zero: it does not wait): at
// once when the peers asked do not have it (joinState.lacking); once it
// has waited the origin's time for a leaf when peers are slower than the
// origin's share (slowerThanOrigin: the next leaf from a slow peer is
// often on its way, and the origin would bring it no sooner; hedged at
// once, a seed serving 20 apps at 7-10 MiB/s each, under half an idle
// origin's, lost every leaf a reader waited on for a moment to the origin,
// six in a row for one app of the default demo); before any peer
// delivered, once it has waited the first block's time
// (joinState.first); else once it has waited hedgeWait. A holder serving
// a crowd sends each of its fetchers leaves in bursts, with gaps of
// several times its mean pace; hedged at the reader's first wait, leaves
// came to a sixth of the bytes of a crowd beside a seed, almost all of
// them sent by the peers too. Once the peers have sent nothing for as long
// (takesOver) or no holder serves any more, the origin takes every leaf
// it may. It notes in s when the answer changes.
func hedgeLeaf(j joinState, s *soon) bool {
	if j.waitSince.IsZero() {
		return false
	}
	if j.lacking() {
		return true
	}
	if j.peersSlow {
		return s.reached(j.now, j.waitSince.Add(j.leaf))
	}
	wait := j.first() // the first block: time to first byte is the origin's to beat
	if j.peerDelivered {
		wait = j.hedgeWait()
	}
	return s.reached(j.now, j.waitSince.Add(wait))
}

// hedgeWait is hedgeWaits times as long as peers get for a leaf (wait), at
// most half of stallTimeout: a holder serving a crowd sends each of its
// fetchers leaves in bursts. Only wait when no crowd is known and the
// holder asked directly for the leaf the reader waits on has sent later
// leaves instead: it skipped it (a damaged block it dropped,
// TestFaultSeedDamage).
func (j joinState) hedgeWait() time.Duration {
	w := j.wait()
	if j.skipped && !j.crowd {
		return w
	}
	return max(w, min(hedgeWaits*w, j.stallTimeout/2))
}

// takesOver reports whether the origin, hedging per leaf, takes every leaf
// it may from now on: the leaves asked of peers have got nothing for
// hedgeWait (the holder has stalled, not only paused between bursts). A
// holder still serving others keeps sending this node HAVEs, so only the
// silence of its blocks tells. It notes in s when the answer changes.
func takesOver(j joinState, s *soon) bool {
	return j.peerWaiting && s.reached(j.now, j.lastPeer.Add(j.hedgeWait()))
}

// peerHedges reports whether the leaf the reader has waited on since
// waitSince (zero: it does not wait), asked of peers at askedAt, is asked
// directly of a holder that serves this fetch: once the reader has waited
// on it, since it was asked, for peerTimeout. Bitswap's session gives each want-block to one
// of the peers that said HAVE, often a crowd member at its serving cap,
// while the seed serving this node goes on sending the leaves around it.
// Asking again costs a message, not origin bytes, so it does not wait for
// the peers' pace (afterPeers): timed by a pace the re-asks themselves set,
// each leaf waited twice as long as the one before (0.2, 0.4, 0.6, 0.85,
// 1.3 s in TestLeafAskedOfServingHolder). It notes in s when the answer
// changes.
func peerHedges(now, waitSince, askedAt time.Time, peerTimeout time.Duration, s *soon) bool {
	if waitSince.IsZero() {
		return false
	}
	return s.reached(now, later(waitSince, askedAt).Add(peerTimeout))
}

// skipAfter is how many later leaves a holder asked directly for the
// reader's leaf may send before the leaf counts as skipped (skippedLocked):
// twice the sends a meshcdn holder has under way to one peer
// (perPeerSends), as other servers may have more.
const skipAfter = 2 * perPeerSends

// hedgesAgain reports whether an origin that took over from hedging at
// tookOver (zero: it did not) goes back to hedging per leaf: a holder
// serves the fetch and peers have delivered since. A busy seed that paused
// for longer than hedgeWait and then went on sending had the origin take
// every leaf it might for the rest of the fetch: in the default demo the
// readers whose crowd had finished took their last 5 to 11 leaves from the
// origin while the seed sent them too.
func hedgesAgain(j joinState, tookOver time.Time) bool {
	return !tookOver.IsZero() && j.serving && j.lastPeer.After(tookOver)
}

// hedgeWaits is how many times as long as peers get for a leaf the reader
// waits on one, in a crowd, before the origin, hedging per leaf, takes it.
const hedgeWaits = 4

// peerRateWindow is how many recent peer leaves the peer rate is taken over.
const peerRateWindow = 4

// slowerThanOrigin reports whether the peer deliveries at times (the last
// peerRateWindow, oldest first) came at less than half of origin bytes
// per second. It says nothing (false) with fewer times or no origin rate.
func slowerThanOrigin(times []time.Time, origin float64) bool {
	if len(times) < peerRateWindow || origin == 0 {
		return false
	}
	span := times[len(times)-1].Sub(times[0])
	if span <= 0 {
		return false
	}
	rate := float64((len(times)-1)*dagfile.ChunkSize) / span.Seconds()
	return rate < origin/2
}

// Striping. Nodes fetching the same content at the same time (Config.Crowd
// names them) split the leaves they take from the origin: leaf i belongs
// to the member p of the stripe (the crowd and this node, penalised peers
// left out) with the highest score(root, p, i), the first 8 bytes, read
// big-endian, of SHA-256(root CID bytes || peer ID bytes || i as 8 bytes
// big-endian); a tie goes to the greater peer ID bytes. All members compute
// the same owners without talking (rendezvous hashing), and a node that
// joins or leaves moves only the leaves it wins or held. A node asks the
// origin for its own leaves and peers for the others; see overdue for
// when it takes another's leaf from the origin after all.

// stripeScore is member p's score for leaf i of root.
func stripeScore(root cid.Cid, p peer.ID, i int) uint64 {
	h := sha256.New()
	h.Write(root.Bytes())
	h.Write([]byte(p))
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], uint64(i))
	h.Write(idx[:])
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0])[:8])
}

// stripe is the owners of a root's leaves among a set of members. It
// caches owners as they are asked; a new set of members needs a new
// stripe. Not safe for concurrent use (the Reader's lock guards it).
type stripe struct {
	root    cid.Cid
	self    peer.ID
	members []peer.ID // sorted, no duplicates
	// lead is the member that began first, alone: it owns the leaves
	// before leads, those it can have taken from the origin by the time
	// the next node began (headStart). "" when none.
	lead   peer.ID
	leads  int
	owners map[int]peer.ID
	places map[int]int
}

// newStripe makes the stripe of root over self and crowd, less the peers
// left out.
func newStripe(root cid.Cid, self peer.ID, crowd []peer.ID, out func(peer.ID) bool) *stripe {
	return makeStripe(root, self, crowd, out, true)
}

// makeStripe makes the stripe of root over crowd, less the peers left out,
// and self if selfIn (see heard): a node the others cannot have heard of
// yet owns nothing when it knows of others, so that it does not take from
// the origin leaves that they, not knowing of it, take too.
func makeStripe(root cid.Cid, self peer.ID, crowd []peer.ID, out func(peer.ID) bool, selfIn bool) *stripe {
	var ms []peer.ID
	if selfIn {
		ms = append(ms, self)
	}
	for _, p := range crowd {
		if p != self && (out == nil || !out(p)) {
			ms = append(ms, p)
		}
	}
	slices.Sort(ms)
	return &stripe{root: root, self: self, members: slices.Compact(ms), owners: make(map[int]peer.ID), places: make(map[int]int)}
}

// same reports whether the stripe is over exactly the members of o, with
// the same head start.
func (s *stripe) same(o *stripe) bool {
	return slices.Equal(s.members, o.members) && s.lead == o.lead && s.leads == o.leads
}

// withLead gives the stripe's leaves before n to member lead (headStart);
// a lead that is not a member, or n <= 0, gives none. It is called on a
// stripe just made, before any owner is asked of it.
func (s *stripe) withLead(lead peer.ID, n int) {
	if n <= 0 || !slices.Contains(s.members, lead) {
		lead, n = "", 0
	}
	s.lead, s.leads = lead, n
}

// fetchStart is when a node began to fetch a root, as a stripe knows it,
// and whether it is a member of the stripe.
type fetchStart struct {
	p      peer.ID
	at     time.Time
	member bool
}

// headStart returns the member that began to fetch first, alone, and the
// leaves it can have taken from the origin before the next node began
// (starts: the members and this node): the time between the two at
// concurrency leaves per leaf, the origin's time for one. A crowd that
// forms while its first node is well under way (in the demo site's 50-app
// flash crowd, the apps that opened the video as the first held most of
// it) would otherwise split the leaves the first already has and take
// their shares from the origin again. The leaves are counted from the
// content's start at the origin's pace: a lead that read slower, or from
// further on, has fewer, and those it lacks go to the others as an
// owner's overdue leaves do. No lead (0) when two began at once or the
// first is not a member.
func headStart(starts []fetchStart, leaf time.Duration, concurrency int) (peer.ID, int) {
	if len(starts) < 2 || leaf <= 0 {
		return "", 0
	}
	first, second := 0, -1
	for k := 1; k < len(starts); k++ {
		switch {
		case starts[k].at.Before(starts[first].at):
			first, second = k, first
		case second < 0 || starts[k].at.Before(starts[second].at):
			second = k
		}
	}
	gap := starts[second].at.Sub(starts[first].at)
	if !starts[first].member || gap <= 0 {
		return "", 0
	}
	return starts[first].p, int(gap * time.Duration(max(concurrency, 1)) / leaf)
}

// alone reports whether nothing is split: no member but this node.
func (s *stripe) alone() bool {
	return len(s.members) == 0 || len(s.members) == 1 && s.members[0] == s.self
}

// hearing is how long after its fetch announcement a node counts itself in
// the stripe (see heard): the time the announcement takes to reach the
// others, Config.PeerTimeout.

// heard reports whether the others fetching the same content can be taken
// to have heard of this node's fetch, announced at announced (zero: not
// yet), by now: hearing after it. A fetch that is not announced (no
// Advertiser) counts as heard: the crowd it is given is all it can know.
// It notes in s when the answer changes.
func heard(announces bool, announced, now time.Time, hearing time.Duration, s *soon) bool {
	if !announces {
		return true
	}
	if announced.IsZero() {
		return false
	}
	return s.reached(now, announced.Add(hearing))
}

// owner is the member that takes leaf i from the origin.
func (s *stripe) owner(i int) peer.ID {
	s.rank(i)
	return s.owners[i]
}

// place is this node's place in leaf i's ranking of the members: 0 if it
// owns the leaf, 1 if it has the next-highest score, and so on (the
// members' len if it is not a member).
func (s *stripe) place(i int) int {
	s.rank(i)
	return s.places[i]
}

// rank ranks the members for leaf i, each score computed once, and caches
// the owner and this node's place.
func (s *stripe) rank(i int) {
	if _, ok := s.owners[i]; ok {
		return
	}
	led := s.lead != "" && i < s.leads // the lead's, the others ranked after it
	scores := make([]uint64, len(s.members))
	best, me := -1, -1
	for k, p := range s.members {
		scores[k] = stripeScore(s.root, p, i)
		if p == s.self {
			me = k
		}
		if led && p == s.lead {
			continue
		}
		if best < 0 || above(scores[k], p, scores[best], s.members[best]) {
			best = k
		}
	}
	var owner peer.ID
	switch {
	case led:
		owner = s.lead
	case best >= 0:
		owner = s.members[best]
	}
	s.owners[i], s.places[i] = owner, s.placeOf(me, scores, led)
}

// placeOf is the place in a leaf's ranking of the member at me (-1: this
// node is no member) given the members' scores, led when the leaf is the
// lead's.
func (s *stripe) placeOf(me int, scores []uint64, led bool) int {
	switch {
	case me < 0:
		return len(s.members)
	case led && s.self == s.lead:
		return 0
	}
	place := 0
	if led {
		place = 1
	}
	for k, p := range s.members {
		if !(led && p == s.lead) && above(scores[k], p, scores[me], s.self) {
			place++
		}
	}
	return place
}

// above reports whether member p with score a ranks above member q with
// score b: a higher score, a tie to the greater peer ID bytes.
func above(a uint64, p peer.ID, b uint64, q peer.ID) bool { return a > b || a == b && p > q }

// assumedLeafTime is how long the origin is taken to need for one leaf
// before any origin request of this Fetcher has been measured: 1 MiB/s.
const assumedLeafTime = time.Second

// leafTime is how long one origin request takes for one leaf at rate
// bytes per second (0: not measured yet, assumedLeafTime).
func leafTime(rate float64) time.Duration {
	if rate <= 0 {
		return assumedLeafTime
	}
	return time.Duration(float64(dagfile.ChunkSize) / rate * float64(time.Second))
}

// maxAheadWave is the last backup place that takes from the origin a leaf
// the reader does not wait on yet (overdue): the next would wait 2^16
// generations.
const maxAheadWave = 16

// leafAsk is what overdue needs about a leaf another member owns.
type leafAsk struct {
	// since is when the owner can be taken to have started on the leaf:
	// when it was first asked of peers or when the origin joined this
	// fetch, whichever is later (the owner is in the same position).
	// waitSince is when the reader began to wait on it (zero: it does
	// not).
	since, waitSince time.Time
	// rank is how many rounds of origin requests its owner needs to reach
	// it: 1 + (how many of the owner's leaves come before it in the
	// window) / Config.OriginConcurrency.
	rank int
	// held: a peer said HAVE of the leaf (its owner has it); ownerActive:
	// its owner sent a block or a HAVE of this content within peerTimeout
	// plus one leaf's origin time (it is working through its share).
	held, ownerActive bool
	// inMesh: the leaves ahead of the reader are left to the mesh
	// (leftToMesh): the content is held whole by a peer, and on its way;
	// near: this node is connected to such a holder, or peers outside the
	// stripe have delivered leaves of it (it comes through them).
	inMesh, near bool
	// pace is the recent time between leaves from peers (peerPace).
	pace time.Duration
	// backup is this node's place in the leaf's ranking after its owner
	// (stripe.place: 1 for the next-highest score; 0 counts as 1).
	backup int
	// far: the owner is not connected to this node, so its copy comes
	// through the members between them, farHops generations late.
	far bool
}

// farHops is how many generations later than a connected owner's a copy
// from an owner this node is not connected to is looked for: the hops of a
// crowd's graph between two apps that each know a few others. It was 2
// (through a member connected to both, and one more) while the test crowds
// drew a star, every app linked to the few started first, two hops from
// any other (see overdue). In a random graph of 50 apps with 3 to 15 links
// each (meshtest, since 2026-12-06) the copies travel farther: the demo's
// crowd loading its assets together (-together), where all 50 stripe the
// video at once, took it 2.85-5.07 times from the origin (median 3.58 of
// 9 runs) with 4, against 3.86-5.21 (median 3.96) with 2, interleaved;
// loading them one after another, 2.27-3.36 copies of the site against
// 2.01-3.58 (3 pairs): no change beyond the noise.
const farHops = 4

// overdue reports whether a leaf another member owns is taken from the
// origin after all: its owner should have had it from the origin (rank
// times the origin's time for a leaf, leaf) and offered it within
// peerTimeout. That is when nobody has said HAVE of it by then and its
// owner has been silent for as long, or when the reader has waited
// peerTimeout plus one leaf's origin time on it (its owner is too busy),
// twice that if a peer has said HAVE of it (the holders are too busy).
//
// The members after the owner do not all go at once: the one placed next
// (backup 1) goes at those times, and each later one waits for the copies
// of those before it to spread. Ahead of the reader, backup k waits
// 2^(k-1)-1 generations more, a generation being peerTimeout plus the
// longer of the origin's time for a leaf and the recent time between
// leaves from peers (pace): the first backup's copy reaches one member a
// generation, each member holding it passes it on, and the holders at
// their serving caps are as slow as pace says. Places past maxAheadWave
// never take a leaf ahead of the reader. An owner this node is not
// connected to (far: known by gossip only) cannot tell it HAVE, and its
// copy comes through members connected to both: ahead of the reader its
// backups wait farHops generations more (the demo's 50-app flash crowd
// when it drew a star: origin copies median 5.03 of 7 with 2 against 5.49
// of 4 without, interleaved; 4 generations then, 5.68-7.73 against
// 4.68-5.06 of 3 pairs). With the reader waiting on the
// leaf, backup k goes after k times peerTimeout plus the longer of one
// leaf's origin time and pace (twice that if held): the holders of a
// congested crowd send each member a leaf per pace, and a reader that
// gave them only the origin's time for a leaf took each leaf it waited on
// from the origin (the demo's 50-app flash crowd: the origin sent 7.1,
// 9.8 and 10.4 copies of the site; giving them pace, 5.5, 5.9 and 6.3,
// finishing no later). A node that announces a fetch and sends nothing
// thus delays its first backup by peerTimeout plus the origin's time for
// what it was to fetch: it is neither active nor holding, and the first
// rule takes its leaves.
//
// (The waves were once capped at 4, the members placed later all going
// together in the last: in a congested flash crowd every member of a large
// stripe then took each late leaf from the origin. Spaced one generation
// apart, at the origin's pace only, a leaf still went to the origin about
// once per 0.5 s that the mesh had not delivered it: 1,000 overdue leaves
// in a 50-app flash crowd, 15 to 21 copies of the site.) It notes in s when
// the answer changes.
func overdue(a leafAsk, now time.Time, peerTimeout, leaf time.Duration, s *soon) bool {
	wave := time.Duration(max(a.backup, 1))
	if !a.held && !a.inMesh && !a.ownerActive && a.backup <= maxAheadWave {
		gens := time.Duration(1)<<(wave-1) - 1
		if a.far {
			gens += farHops
		}
		due := a.since.Add(peerTimeout + time.Duration(max(a.rank, 1))*leaf + gens*(peerTimeout+max(leaf, a.pace)))
		if s.reached(now, due) {
			return true
		}
	}
	if !a.waitSince.IsZero() {
		if a.inMesh && (a.held || a.near) {
			wave = max(wave, hedgeWaits)
		}
		wait := wave * (peerTimeout + max(leaf, a.pace))
		if a.held {
			wait *= 2 // a peer has it: it is on its way
		}
		if s.reached(now, a.waitSince.Add(wait)) {
			return true
		}
	}
	return false
}

// leftToMesh reports whether a stripe leaves the leaves ahead of its reader
// to the mesh, its own share included (the origin takes a leaf only once
// the reader has waited on it: overdue's second rule): when a peer is
// known to hold the whole content (holder: an announced HAVE, not a
// member's FETCH) and peers have delivered a block of this fetch
// (delivered), or for the first generation (gen) from its start while none
// has yet. Every leaf is in the mesh then, and comes through the members
// between this node and the holder, which it need not be connected to. In
// the demo site's 50-app flash crowd the first app held the video 1.4 s
// after the others began it, and they took their own shares and 100
// overdue leaves ahead of their readers from the origin after that, about
// 2.6 copies of the site. A holder that no peer's delivery bears out (a
// forged announcement beside members that send nothing) holds the leaves
// back for one generation; beside members that deliver, it keeps them from
// fetching ahead (TestStripingForgedHolderPair: 16 MiB in 2.3 to 6.1 s
// instead of 1.0 on loopback). Requiring a delivery within the last
// generation instead cost the flash crowd more origin copies than it
// saved (gaps between a congested mesh's deliveries sent every leaf of
// this node's share in the window to the origin at once): 6.07, 4.6 and
// 7.68 copies, three generations 4.65, 4.19 and 5.33, against 4.36, 3.63
// and 2.94. It notes in s when the answer changes.
func leftToMesh(holder, delivered bool, start, now time.Time, gen time.Duration, s *soon) bool {
	return holder && (delivered || !s.reached(now, start.Add(gen)))
}

// reask reports whether a leaf another stripe member owns, asked of peers
// at asked and not held by any peer (no HAVE), is asked again now: at
// most every interval per fetch (not before next, the time the last
// re-ask allows the next one) and not before interval after it was last
// asked. Boxo's server does not reliably tell a peer that was answered
// DONT_HAVE that it has the block now, so the owner's share is asked for
// again until someone says HAVE. It notes in s when the answer changes.
func reask(asked, next, now time.Time, interval time.Duration, held bool, s *soon) bool {
	if held {
		return false
	}
	return s.reached(now, later(asked.Add(interval), next))
}

// addrlessPoll returns how long a fetch with providers known by ID only
// waits before it looks for their addresses again, after waiting last (0:
// none noted since it last looked), the first of them noted waited ago:
// addrlessFirst for the first addrlessSteady, then doubling each time up
// to addrlessMost. Gossip brings a member's addresses moments after its
// fetch announcement, or much later when it is reachable only through a
// relay, or never; looked for every 50 ms for the whole fetch, they cost a
// scheduling pass each time. Doubling from the start, addresses that came
// 300 ms after the fetch began waited for the look at 350 ms and then
// 750 ms, by which time the origin had taken the member's share (seen in
// TestStripingMemberAddressesLate, one run in 20).
func addrlessPoll(last, waited time.Duration) time.Duration {
	if last <= 0 || waited < addrlessSteady {
		return addrlessFirst
	}
	return min(2*last, addrlessMost)
}

const (
	// addrlessFirst is the first wait of addrlessPoll, and every wait of
	// its first addrlessSteady.
	addrlessFirst = 50 * time.Millisecond
	// addrlessSteady is how long addrlessPoll looks every addrlessFirst.
	addrlessSteady = time.Second
	// addrlessMost is the longest wait of addrlessPoll.
	addrlessMost = time.Second
)

// Providers found during a fetch (refresh.go).

const (
	// provRefresh is how often a fetch waiting on peers looks the
	// providers up again.
	provRefresh = 2 * time.Second
	// provRefreshNew is the most new providers one lookup connects to.
	provRefreshNew = 8
)

// lookAgain reports whether a fetch looks its providers up again at now:
// when one was known (a lookup that finds none may go to the DHT, the
// provider finder's fallback, and the origin is on then anyway), a leaf
// waits on peers, and provRefresh has passed since the last lookup.
func lookAgain(known, waiting bool, last, now time.Time, s *soon) bool {
	if !known || !waiting {
		return false
	}
	return s.reached(now, last.Add(provRefresh))
}

// Crowd members with no sign of life (unproven.go).

// crowdJudged reports whether a fetch judges its crowd members at now:
// once the reader, with the origin on (since originSince), has waited
// stall on its present leaf (since waitSince; zero: it does not wait)
// and on those before it while no peer had delivered any of the content
// (dry: the waits that ended so, origin on). Counting the earlier waits is for
// a reader kept waiting leaf after leaf: the leaves a forged crowd owned
// reached it from the origin one by one, as their backups' waits ran out,
// and each restarted the wait on one leaf (a fetch beside 64 forged
// members took 8-22 s instead of 6: TestFaultSybilFetchers). Judging
// once nothing came from peers for stall, waiting or not, cost a real
// flash crowd origin copies (the demo's 50 apps: 5.4-8.1, median 7.4,
// against 5.5-6.9), and so did adding up the waits since a peer last
// delivered (6.2-7.6): a judgement made early sees fewer signs of life.
func crowdJudged(originOn bool, originSince, waitSince time.Time, dry time.Duration, now time.Time, stall time.Duration, s *soon) bool {
	if !originOn || waitSince.IsZero() {
		return false
	}
	return s.reached(now, later(waitSince, originSince).Add(stall-dry))
}

// memberSigns is what a fetch knows of a crowd member when it judges the
// crowd: connected (linked), useful to this node this fetch, owning a leaf
// a peer has said HAVE of or sent (alive).
type memberSigns struct{ linked, useful, alive bool }

// memberKept reports whether a member stays in the stripe of a fetch that
// judged its crowd forged: with any sign of life.
func memberKept(m memberSigns) bool { return m.linked || m.useful || m.alive }

// crowdShowsLife reports whether a crowd is real as far as a fetch can
// tell: a member known only by gossip (neither linked nor useful) owns a
// leaf a peer has said HAVE of or sent.
func crowdShowsLife(ms []memberSigns) bool {
	for _, m := range ms {
		if m.alive && !m.linked && !m.useful {
			return true
		}
	}
	return false
}
