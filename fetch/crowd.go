// The Reader in a crowd: its announcement, the stripe of the members
// fetching the same content, and which leaves are its own to take from the
// origin (the rules themselves are in policy.go).

package fetch

import (
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// earlyAnnounceLocked reports whether a fetch announces itself when it
// first asks peers, before any origin request: when it stripes and no
// provider it knows holds the whole content (every one known is of the
// crowd fetching it). Others fetching the same content then connect to it
// and ask it for the leaves it gets. Announced only once it took from the
// origin, most of a crowd was known to nobody: in the demo site's 50-app
// flash crowd a video fetch knew a median of 3 others when the origin
// joined, each app was connected to the 3-5 peers it first dialled, and
// the first apps served most of the crowd at their serving caps (7 of 50
// served 200-250 MiB each; 11 served nothing) while the origin sent 8-10
// copies. A fetch beside a holder (a seed) leaves the content to it. The
// caller holds mu.
func (r *Reader) earlyAnnounceLocked() bool {
	if !r.striping() {
		return false
	}
	fetching := r.f.cfg.Crowd.Fetchers(r.t.Cid)
	return !slices.ContainsFunc(r.provs, func(p peer.ID) bool {
		return !slices.Contains(fetching, p) && !r.f.guard.isPenalised(p)
	})
}

// striping reports whether this fetch splits its origin leaves with a
// crowd (Config.Crowd set, Config.NoStriping not).
func (r *Reader) striping() bool { return r.f.cfg.Crowd != nil && !r.f.cfg.NoStriping }

// stripeLocked brings the stripe up to date with the crowd fetching the
// root: members are the crowd and this node, penalised peers and, after
// StallTimeout, those with no sign of life left out (unproven.go).
// Members not yet known as providers are connected (so bitswap asks them)
// and judged for silence like providers. The caller holds mu.
func (r *Reader) stripeLocked(p *plan, now time.Time, s *soon) {
	if !r.striping() {
		return
	}
	self := r.f.cfg.Host.ID()
	in := heard(r.f.cfg.Advertiser != nil, r.announcedAt, now, r.f.cfg.PeerTimeout, s)
	st := makeStripe(r.t.Cid, self, r.f.cfg.Crowd.Fetchers(r.t.Cid), r.memberOutLocked, in)
	if fs, ok := r.f.cfg.Crowd.(FetchStarts); ok {
		st.withLead(headStart(r.startsLocked(fs, st, now), leafTime(r.f.originRequestRate()), r.f.cfg.OriginConcurrency))
	}
	r.holderKnown, r.holderNear = r.holderKnownLocked()
	r.borne = r.borne || r.borneLocked(st)
	if r.stripe == nil || !r.stripe.same(st) {
		met := r.stripe != nil && slices.Equal(r.stripe.members, st.members)
		r.stripe = st
		if !met {
			r.meetMembersLocked(p)
		}
	}
}

// startsLocked returns when the stripe's members and this node began to
// fetch the root, as far as this node knows: this node at its start, a
// member when this node heard its FETCH (fs, asked once a pass), now if it
// did not. The caller holds mu.
func (r *Reader) startsLocked(fs FetchStarts, st *stripe, now time.Time) []fetchStart {
	self := r.f.cfg.Host.ID()
	heard := fs.FetchStarts(r.t.Cid)
	starts := []fetchStart{{p: self, at: r.start, member: slices.Contains(st.members, self)}}
	for _, m := range st.members {
		if m == self {
			continue
		}
		at, ok := heard[m]
		if !ok {
			at = now
		}
		starts = append(starts, fetchStart{p: m, at: at, member: true})
	}
	return starts
}

// holderKnownLocked reports whether the crowd, if it tells holders
// (Holders), knows a peer other than this node that holds the content
// whole and is not penalised (known), and one this node is connected to
// (near). The caller holds mu.
func (r *Reader) holderKnownLocked() (known, near bool) {
	hs, ok := r.f.cfg.Crowd.(Holders)
	if !ok {
		return false, false
	}
	self, nw := r.f.cfg.Host.ID(), r.f.cfg.Host.Network()
	for _, q := range hs.Holders(r.t.Cid, holdersAsked) {
		if q == self || r.f.guard.isPenalised(q) {
			continue
		}
		known = true
		if nw.Connectedness(q) == network.Connected {
			return true, true
		}
	}
	return known, false
}

// borneLocked reports whether a peer that is not a member of st has
// delivered a leaf of the window: the content reaches this node from
// beyond the stripe, as it does from a holder it is not connected to
// through the peers between them, and not only as the members' shares.
// Only the window is looked at (a pass runs after each delivery, and the
// answer is kept once true: Reader.borne), so that a pass costs no more on
// a long file. The caller holds mu.
func (r *Reader) borneLocked(st *stripe) bool {
	cur := r.curLeaf()
	for i := max(cur-1, 0); i < min(len(r.st), cur+r.f.cfg.ReadAhead); i++ {
		if q := r.st[i].from; q != "" && !slices.Contains(st.members, q) {
			return true
		}
	}
	return false
}

// holdersAsked is how many holders holderKnownLocked asks the crowd for.
const holdersAsked = 8

// meetMembersLocked makes the stripe's members that are not providers yet
// providers, connecting them. A member this node cannot dial yet (known by
// ID only: its fetch announcement came by gossip before its addresses) is
// dialled once its addresses arrive (addrlessLocked). The caller holds mu.
func (r *Reader) meetMembersLocked(p *plan) {
	h := r.f.cfg.Host
	for _, m := range r.stripe.members {
		if m == h.ID() || slices.Contains(r.provs, m) {
			continue
		}
		r.provs = append(r.provs, m)
		if r.addrlessLocked(m) {
			continue
		}
		if ai := h.Peerstore().PeerInfo(m); len(ai.Addrs) > 0 && r.admitDialLocked(m) {
			p.connect = append(p.connect, ai)
		}
	}
}

// reaskLocked asks peers again, on a new bitswap session, for the leaves
// other stripe members own that no peer has said HAVE of since they were
// last asked (reask, policy.go): a peer that answered DONT_HAVE because
// it had not yet fetched its share is not reliably heard from when it has
// it. The caller holds mu.
func (r *Reader) reaskLocked(cur, end int, now time.Time, s *soon) {
	if r.stripe == nil || r.stripe.alone() {
		return
	}
	every := max(r.f.cfg.PeerTimeout, leafTime(r.f.originRequestRate()))
	self := r.f.cfg.Host.ID()
	n := r.askAgainLocked(now, cur, end, false, func(i int) bool {
		return r.stripe.owner(i) != self &&
			reask(r.st[i].peerAt, r.reaskAt, now, every, r.f.guard.held(r.leaves[i].Cid), s)
	})
	if n == 0 {
		return
	}
	r.reaskAt = now.Add(every)
	r.f.log.Debug("leaves asked again", "cid", r.t.Cid, "leaves", n)
}

// mineLocked reports whether leaf i may be asked of the origin, and why:
// always without a stripe; striping, when the stripe gives it to this node
// or the leaf is overdue from its owner (policy.go: overdue); and while the
// origin hedges per leaf (a holder serves the fetch), only if besides it
// is the leaf the reader waits on and hedgeLeaf says so. The caller holds
// mu.
func (r *Reader) mineLocked(p *plan, i int, now time.Time, leaf time.Duration, s *soon) (bool, string) {
	if r.originHedge {
		if i != r.curLeaf() || !hedgeLeaf(r.joinLocked(p, now, s), s) {
			return false, ""
		}
		// The leaf may be hedged; in a crowd, the stripe still says who
		// takes it from the origin (its owner, the others once it is
		// overdue): every member of a crowd beside a busy seed hedged the
		// same leaves. Alone, the hedge's rule stands: it knows a leaf the
		// holder skipped (a damaged block it dropped, TestFaultSeedDamage),
		// which the stripe's due would have waited on as held.
		if r.stripe != nil && r.stripe.alone() {
			return true, "hedge alone"
		}
		mine, why := r.stripeMineLocked(i, now, leaf, s)
		return mine, "hedge " + why
	}
	return r.stripeMineLocked(i, now, leaf, s)
}

// stripeMineLocked is mineLocked's answer by the stripe alone. The caller
// holds mu.
func (r *Reader) stripeMineLocked(i int, now time.Time, leaf time.Duration, s *soon) (bool, string) {
	if r.stripe == nil {
		return true, "no stripe"
	}
	self, owner := r.f.cfg.Host.ID(), r.f.cfg.Host.ID()
	alone := r.stripe.alone()
	if !alone {
		owner = r.stripe.owner(i)
	}
	held := r.f.guard.held(r.leaves[i].Cid)
	pace := peerPace(r.peerTimes)
	inMesh := r.inMeshLocked(now, leaf, s)
	if inMesh && r.stats.PeerBytes == 0 {
		return false, ""
	}
	switch {
	case alone && !held && !inMesh:
		return true, "alone"
	case owner == self && !held && !inMesh:
		return true, "mine"
	case r.f.guard.isPenalised(owner):
		return true, "owner penalised" // until the stripe is made again without it
	}
	// Another's leaf, or this node's own that a peer already holds (it
	// said HAVE) or that the mesh brings: the peers are asked, and the
	// origin only once it is overdue.
	before := 0 // the owner's leaves before i: its origin requests go in file order
	for k := r.curLeaf(); k < i; k++ {
		if alone || r.stripe.owner(k) == owner {
			before++
		}
	}
	a := leafAsk{since: later(r.st[i].since, r.originSince), rank: 1 + before/r.f.cfg.OriginConcurrency,
		held: held, inMesh: inMesh, near: r.holderNear || r.borne, pace: pace, backup: r.stripe.place(i), // 0 when alone
		ownerActive: owner != self && r.f.guard.usefulSince(owner, now.Add(-r.f.cfg.PeerTimeout-leaf)),
		far:         owner != self && r.f.cfg.Host.Network().Connectedness(owner) != network.Connected}
	if i == r.curLeaf() {
		a.waitSince = r.waitSince
	}
	if !overdue(a, now, r.f.cfg.PeerTimeout, leaf, s) {
		return false, ""
	}
	r.f.log.Debug("leaf overdue from its stripe owner", "cid", r.leaves[i].Cid, "owner", owner,
		"held", a.held, "active", a.ownerActive, "mesh", a.inMesh, "rank", a.rank, "leaf", leaf, "asked", now.Sub(a.since), "waited", now.Sub(a.waitSince))
	switch {
	case alone:
		return true, "alone, waited"
	case owner == self:
		return true, "mine, waited"
	case a.held:
		return true, "overdue held"
	}
	return true, "overdue"
}

// inMeshLocked reports whether the leaves are left to the mesh
// (leftToMesh). The caller holds mu.
func (r *Reader) inMeshLocked(now time.Time, leaf time.Duration, s *soon) bool {
	gen := r.f.cfg.PeerTimeout + max(leaf, peerPace(r.peerTimes))
	if r.stats.PeerBytes == 0 && r.holderNear {
		gen = min(hedgeWaits*gen, max(gen, r.f.cfg.StallTimeout/2))
	}
	return leftToMesh(r.holderKnown, r.stats.PeerBytes > 0, r.start, now, gen, s)
}
