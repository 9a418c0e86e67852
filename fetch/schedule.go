// The Reader's scheduling pass: under the lock it gathers the state of the
// leaves and sources, asks the policy (policy.go) what to do, and carries
// out the plan once the lock is released.

package fetch

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/store"
)

// plan is what one pass of schedule decided, carried out once the lock is
// released.
type plan struct {
	leaves               []store.Leaf
	cur                  int
	local, peer, origin  []int // leaves to start requests for
	localQ, peerQ, origQ []*req
	batch                *peerBatch
	connect              []peer.AddrInfo // crowd members to connect to
	silent               []peer.ID       // providers to penalise for silence
	advertise, finish    bool
	refresh              bool // look the providers up again (refresh.go)
	// missing and peerWaiting are windowLocked's answer; join the state
	// the origin's rules decide on, built once a pass (joinLocked).
	missing, peerWaiting bool
	join                 *joinState
}

// schedule starts and cancels requests for the leaves around the position,
// as the policy (policy.go) says. It returns when it wants to run again at
// the latest (a hedging or stall deadline), and true when the fetch has
// ended.
func (r *Reader) schedule() (next time.Time, done bool) {
	cfg := &r.f.cfg
	r.mu.Lock()
	if r.closed || r.err != nil {
		r.mu.Unlock()
		return time.Time{}, true
	}
	now := time.Now()
	s := newSoon(now)
	cur := r.curLeaf()
	end := min(len(r.leaves), cur+r.aheadLocked())
	r.dropOutsideLocked(cur, end)
	p := &plan{leaves: r.leaves, cur: cur}
	p.missing, p.peerWaiting = r.windowLocked(cur, end)
	r.joinOriginLocked(p, now, s)
	// A stuck leaf is asked again before anything is planned: requests
	// planned and then dropped would be recorded as under way and never
	// started.
	if r.stuckLocked(cur, end, now, s) {
		r.mu.Unlock()
		r.wake()
		return now, false
	}
	r.peerHedgeLocked(cur, now, s)
	r.judgeMembersLocked(now, s)
	r.stripeLocked(p, now, s)
	r.dialAddrlessLocked(p, now, s)
	r.dialSpareLocked(p)
	p.refresh = r.refreshDueLocked(now, p.peerWaiting, s)
	r.reaskLocked(cur, end, now, s)
	r.planLocked(p, cur, end, now, s)
	if err := r.giveUpLocked(p.missing, now, s); err != nil {
		r.countDialsLocked(-len(p.connect)) // not dialled
		r.mu.Unlock()
		r.fail(err)
		return time.Time{}, true
	}
	p.silent = r.silentLocked(now, s)
	n := len(r.leaves)
	// A fetch tells the mesh it is under way, so that peers wanting the
	// same content get its leaves from here as they arrive and, striping,
	// leave its share to this node: a cold fetch, and a striping one, when
	// its origin requests start; a striping fetch that knows of no holder
	// of the whole content as soon as it asks peers, as it may be the
	// first of a crowd that starts together: the others have then heard of
	// it by the time the origin joins (PeerTimeout later) and split the
	// leaves with it. One that knows of others fetching announces itself
	// too (earlyAnnounce).
	p.advertise = !r.advertised && cfg.Advertiser != nil && r.fetched < n &&
		(len(p.origin) > 0 && (r.prov == provNone || r.striping()) || len(p.peer) > 0 && r.earlyAnnounceLocked())
	if p.advertise {
		r.advertised, r.announcedAt = true, now
		r.trace.announcedAt = now.Sub(r.start)
		s.at(now.Add(cfg.PeerTimeout)) // heard: this node joins its stripe
	}
	p.finish = r.fetched == n && r.kept == n && !r.finishing
	if p.finish {
		r.finishing = true
	}
	r.mu.Unlock()
	r.carryOut(p)
	return s.next, false
}

// dropOutsideLocked forgets the bytes of leaves behind the reader and
// cancels requests outside the window [cur, end). The caller holds mu.
func (r *Reader) dropOutsideLocked(cur, end int) {
	for i := range r.st {
		if i >= cur && i < end {
			continue
		}
		s := &r.st[i]
		if i < cur && s.data != nil {
			s.data = nil
			s.localTried = false
		}
		s.since = time.Time{}
		r.cancelLocked(s)
	}
}

// cancelLocked cancels and forgets every request for a leaf. The caller
// holds mu.
func (r *Reader) cancelLocked(s *leafState) {
	for _, q := range []**req{&s.local, &s.peer, &s.origin} {
		if *q != nil {
			(*q).cancel()
			if q == &s.origin {
				r.originBusy--
			}
			*q = nil
		}
	}
}

// windowLocked reports whether a leaf in [cur, end) is missing, and
// whether one of those is asked of peers. The caller holds mu.
func (r *Reader) windowLocked(cur, end int) (missing, peerWaiting bool) {
	for i := cur; i < end; i++ {
		if r.st[i].data == nil {
			missing = true
			if r.st[i].peer != nil {
				peerWaiting = true
			}
		}
	}
	return missing, peerWaiting
}

// joinOriginLocked lets the origin join when the policy says so
// (originJoins), as a hedge of the leaf the reader waits on if a holder
// serves the fetch (hedgesOnly), lets a hedging origin take every leaf it
// may once the peers have stalled (takesOver) or no holder serves any
// longer, and has it hedge again once they deliver (hedgesAgain). The
// caller holds mu.
func (r *Reader) joinOriginLocked(p *plan, now time.Time, s *soon) {
	if !r.t.hasOrigin() || r.originOn && !r.originHedge && r.tookOver.IsZero() {
		return
	}
	j := r.joinLocked(p, now, s)
	if r.originOn {
		switch {
		case r.originHedge && (takesOver(j, s) || !j.serving):
			r.originHedge, r.tookOver = false, now
			r.f.log.Debug("origin takes over from hedging", "cid", r.t.Cid, "dur", now.Sub(r.start), "serving", j.serving)
		case !r.originHedge && hedgesAgain(j, r.tookOver):
			r.originHedge, r.tookOver = true, time.Time{}
			r.f.log.Debug("origin hedges again", "cid", r.t.Cid, "dur", now.Sub(r.start))
		}
		return
	}
	join, why := originJoins(j, s)
	if !join {
		return
	}
	hedge := hedgesOnly(why, j.serving)
	r.originOn, r.originHedge, r.originSince = true, hedge, now
	r.trace.joinWhy, r.trace.joinAt = why, now.Sub(r.start)
	if r.trace.on && r.f.cfg.Crowd != nil {
		r.trace.crowdAtJoin = len(r.f.cfg.Crowd.Fetchers(r.t.Cid))
	}
	if r.prov != provNone {
		r.stats.Hedged = true
	}
	r.f.log.Debug("origin joins", "cid", r.t.Cid, "dur", now.Sub(r.start), "why", why, "hedge", hedge)
}

// joinLocked returns the pass's join state, gathered the first time a rule
// asks (joinStateLocked), which notes in s when it changes. The caller
// holds mu.
func (r *Reader) joinLocked(p *plan, now time.Time, s *soon) joinState {
	if p.join == nil {
		j := r.joinStateLocked(now, p.missing, p.peerWaiting, s)
		p.join = &j
	}
	return *p.join
}

// joinStateLocked gathers what originJoins decides on, and notes in s when
// a leaf will count as skipped (skippedLocked). The caller holds mu.
func (r *Reader) joinStateLocked(now time.Time, missing, peerWaiting bool, s *soon) joinState {
	var fetching []peer.ID
	if r.f.cfg.Crowd != nil {
		fetching = r.f.cfg.Crowd.Fetchers(r.t.Cid)
	}
	fetchers := len(fetching)
	for _, p := range fetching {
		if r.sawFetching == nil {
			r.sawFetching = make(map[peer.ID]struct{})
		}
		r.sawFetching[p] = struct{}{}
	}
	serving := r.holderDeliveringLocked(now, fetching)
	return joinState{
		now: now, start: r.start, lastPeer: r.lastPeer, waitSince: r.waitSince,
		peerTimeout: r.f.cfg.PeerTimeout, missing: missing, peerWaiting: peerWaiting,
		noProvider: r.prov == provNone, provsPenalised: r.allProvidersPenalised(),
		peerDelivered: r.stats.PeerBytes > 0,
		peersSlow:     !r.waitSince.IsZero() && slowerThanOrigin(r.peerTimes, r.f.originShare(fetchers)),
		held:          serving || r.firstMissingHeldLocked(), serving: serving, crowd: fetchers > 0, skipped: r.skippedLocked(),
		refused: fetchers == 0 && r.waitedRefusedLocked(), // (only asked for when no crowd is known)
		leaf:    leafTime(r.f.originRequestRate()),
		pace:    peerPace(r.peerTimes), stallTimeout: r.f.cfg.StallTimeout,
	}
}

// skippedLocked reports whether a peer skipped the leaf the reader waits
// on: the holder it was asked of directly, at the top priority
// (peerHedgeLocked), has since sent more than skipAfter later leaves of
// the window (fetched, never asked of the origin), more than it can have
// had under way when asked, so it has dropped the leaf (a damaged block,
// TestFaultSeedDamage; one that answers the direct want with DONT_HAVE is
// caught sooner, waitedRefusedLocked). Later leaves sent by a peer asked
// for the reader's leaf only in the session's order are no sign: a holder
// serves each peer's wants by the priorities they had when asked, and a
// leaf asked far ahead of the reader waits behind leaves asked later
// nearer it. Counted as skipped (until 2026-12-04), they had the default
// demo's apps take leaves from the origin after 200 ms waits while the
// seed sent the leaves around them. The caller holds mu.
func (r *Reader) skippedLocked() bool {
	cur, waiting := r.waitingLeafLocked()
	if !waiting {
		return false
	}
	w := &r.st[cur]
	if w.hedgedTo == "" {
		return false
	}
	n := 0
	end := min(len(r.leaves), cur+r.f.windowLeaves())
	for k := cur + 1; k < end; k++ {
		st := &r.st[k]
		if st.fetched && st.originAt.IsZero() && st.from == w.hedgedTo && st.fetchedAt.After(w.hedgedAt) {
			n++
		}
	}
	return n > skipAfter
}

// waitedRefusedLocked reports whether the reader waits on a leaf that the
// peers asked said they do not have and none said they have
// (guard.refusers), one of them at least a peer this read never saw
// fetching the content: a crowd member says DONT_HAVE of a leaf it has
// yet to fetch, and is not asked again when, done, it moves from the
// fetchers to the holders (a fetch beside one such member took 5 leaves
// from the origin as it did, cut off as the member's copies came). The
// caller holds mu. Every provider of this fetch that can still answer
// (connected, not penalised) must be among them: the first want asks one
// provider directly, and its DONT_HAVE can come before bitswap's session
// has sent its want-haves to the others (they were not "asked" yet).
func (r *Reader) waitedRefusedLocked() bool {
	cur, waiting := r.waitingLeafLocked()
	if !waiting || r.waitSince.IsZero() {
		return false
	}
	refs := r.f.guard.refusers(r.leaves[cur].Cid)
	if !slices.ContainsFunc(refs, func(p peer.ID) bool {
		_, fetched := r.sawFetching[p]
		return !fetched
	}) {
		return false
	}
	return !slices.ContainsFunc(r.provs, func(p peer.ID) bool {
		return !slices.Contains(refs, p) && r.f.guard.mayAnswer(p)
	})
}

// endWaitLocked ends the reader's wait on a leaf (if it waited), adding
// the time it waited with the origin on to waitedDry while no peer has
// delivered any of the content. The caller holds mu.
func (r *Reader) endWaitLocked() {
	if !r.waitSince.IsZero() && r.originOn && r.stats.PeerBytes == 0 {
		r.waitedDry += max(time.Since(later(r.waitSince, r.originSince)), 0)
	}
	r.waitSince = time.Time{}
}

// waitingLeafLocked returns the leaf at the position and whether it has
// yet to arrive (false past the end). The caller holds mu.
func (r *Reader) waitingLeafLocked() (int, bool) {
	cur := r.curLeaf()
	return cur, cur < len(r.leaves) && r.st[cur].data == nil
}

// originShare is the origin's rate a fetch may count on, in bytes per
// second (0: not measured): the Fetcher's measure of its capacity, shared
// with fetchers others known to fetch the same content (Config.Crowd),
// who ask the same origin. Peers serving a crowd are slower for each of
// its nodes than an idle origin, and so is the origin once the whole crowd
// asks it.
func (f *Fetcher) originShare(fetchers int) float64 {
	return f.originCapacity() / float64(1+fetchers)
}

// firstMissingHeldLocked reports whether a peer has said HAVE of the
// first leaf from the position that has not arrived. The caller holds mu.
func (r *Reader) firstMissingHeldLocked() bool {
	for i := r.curLeaf(); i < len(r.leaves); i++ {
		if r.st[i].data == nil {
			return r.f.guard.held(r.leaves[i].Cid)
		}
	}
	return false
}

// holderDeliveringLocked reports whether a provider of this content that
// holds it (not one of the crowd still fetching it) has sent this Fetcher
// a wanted block or a HAVE within StallTimeout: it is up and serving,
// only busy; fetching is the crowd fetching it (Config.Crowd). The
// caller holds mu.
func (r *Reader) holderDeliveringLocked(now time.Time, fetching []peer.ID) bool {
	for _, p := range r.provs {
		if !slices.Contains(fetching, p) && !r.f.guard.isPenalised(p) && r.f.guard.usefulSince(p, now.Add(-r.f.cfg.StallTimeout)) {
			return true
		}
	}
	return false
}

// planLocked decides the requests to start for the leaves in [cur, end):
// the store first, then peers, and the origin once it has joined, for the
// leaves the stripe leaves to this node or that are overdue. The first
// origin request goes alone, so that the first leaf comes as fast as a
// plain request would bring it; then OriginConcurrency. The caller holds
// mu.
func (r *Reader) planLocked(p *plan, cur, end int, now time.Time, s *soon) {
	cfg := &r.f.cfg
	originLimit := cfg.OriginConcurrency
	if r.stats.OriginBytes == 0 {
		originLimit = 1
	}
	leaf := r.leafTimeLocked(cur, end, now)
	window := r.f.windowLeaves()
	for i := cur; i < end; i++ {
		st := &r.st[i]
		if st.data != nil || st.local != nil {
			continue
		}
		if !st.localTried {
			if !st.inStore {
				st.inStore, _ = cfg.Store.Has(r.ctx, r.leaves[i].Cid)
			}
			if st.inStore && i >= cur+r.readAheadLocalLocked(i, window) {
				continue // read from the store when the reader nears it
			}
			st.localTried = true
			if st.inStore {
				st.local = r.newReq()
				p.local, p.localQ = append(p.local, i), append(p.localQ, st.local)
				continue
			}
		}
		if st.peer == nil {
			// One batch for the leaves that entered the window together;
			// the guard gives their wants priorities in file order, so
			// the peer sends the leaf the reader needs first.
			if p.batch == nil {
				p.batch = r.newBatch()
			}
			st.peer, st.peerAt = p.batch.newReq(), now
			if st.since.IsZero() {
				st.since = now
			}
			p.peer, p.peerQ = append(p.peer, i), append(p.peerQ, st.peer)
		}
		if r.originOn && r.originDead == nil && st.origin == nil && r.originBusy < originLimit {
			mine, why := r.mineLocked(p, i, now, leaf, s)
			if !mine {
				continue
			}
			if r.trace.originLeaves == nil {
				r.trace.originLeaves = make(map[string]int)
			}
			r.trace.originLeaves[why]++
			st.origin, st.originAt = r.newReq(), now
			r.originBusy++
			p.origin, p.origQ = append(p.origin, i), append(p.origQ, st.origin)
		}
	}
}

// readAheadLocalLocked is how far ahead of the reader leaf i, in the
// store, is read from it: a leaf fetched and let go of (spareKeptLocked)
// within Fetcher.readBackLeaves, one the store held before the fetch
// within the window (read, it counts as fetched). The caller holds mu.
func (r *Reader) readAheadLocalLocked(i, window int) int {
	if r.st[i].dropped {
		return r.f.readBackLeaves()
	}
	return window
}

// leafTimeLocked is how long the origin is taken to need for one leaf:
// what this Fetcher's origin requests have given (leafTime), or if longer
// how long its oldest origin request in the window has been running
// (others asking the same origin wait as long). The caller holds mu.
func (r *Reader) leafTimeLocked(cur, end int, now time.Time) time.Duration {
	leaf := leafTime(r.f.originRequestRate())
	for i := cur; i < end; i++ {
		if st := &r.st[i]; st.origin != nil && !st.originAt.IsZero() {
			leaf = max(leaf, now.Sub(st.originAt))
		}
	}
	return leaf
}

// stuckLocked asks a leaf the reader has waited on for stuckAfter while it
// was asked of peers again on a new session: bitswap's session can be
// left with nobody to ask (the peer it asked was caught lying, and the
// others were never asked about that block) and, its own search being
// off, never asks again. The new session's want-block for it can go to
// the same slow holder (sessions pick among the peers that said HAVE at
// random until one has delivered): so the holder of the leaf that was not
// asked for it and last delivered a block (promises.liveHolder) is asked
// for it directly too, as a fetch's first leaf is (firstwant.go). A fetch
// with a provider sending 100 KiB/s and one found late failed one time in
// 20 after StallTimeout (TestLateProviderAsked). It reports whether it
// asked again. The caller holds mu.
func (r *Reader) stuckLocked(cur, end int, now time.Time, s *soon) bool {
	if r.waitSince.IsZero() || cur >= len(r.leaves) || r.st[cur].peer == nil {
		return false
	}
	since := later(r.waitSince, r.sessSince)
	if now.Sub(since) < stuckAfter {
		s.at(since.Add(stuckAfter))
		return false
	}
	other := r.f.guard.otherHolder(r.leaves[cur].Cid) // before the wants asked are cancelled
	r.askAgainLocked(now, cur, end, true, func(int) bool { return true })
	r.retarget, r.retargetLeaf = other, cur
	r.f.log.Debug("leaf asked again on a new session", "cid", r.leaves[cur].Cid, "direct", r.retarget)
	return true
}

// peerHedgeLocked asks the leaf the reader waits on, once, directly of
// the holder serving this fetch (servingHolderLocked) at the top priority
// once the reader has waited on it for PeerTimeout since it was asked
// (peerHedges): its peer request is set aside, and planLocked asks it
// again in a batch whose first want goes to that holder (askFirst).
// Bitswap's session gives each want-block to one of the peers that said
// HAVE: in the default demo (a seed, 20 apps) most of the leaves the
// apps took from the origin had been asked only of apps at their serving
// caps, while the seed sent the leaves around them. The caller holds mu.
func (r *Reader) peerHedgeLocked(cur int, now time.Time, s *soon) {
	if cur >= len(r.st) {
		return
	}
	st := &r.st[cur]
	if st.data != nil || st.peer == nil || st.hedgedTo != "" ||
		!peerHedges(now, r.waitSince, st.peerAt, r.f.cfg.PeerTimeout, s) {
		return
	}
	h := r.servingHolderLocked(now, r.leaves[cur].Cid)
	if h == "" {
		return
	}
	st.hedgedTo, st.hedgedAt = h, now
	st.peer.moved.Store(true)
	st.peer.again.Store(true)
	r.f.guard.move(r.leaves[cur].Cid) // before the cancel bitswap sends
	st.peer.cancel()
	st.peer = nil
	r.retarget, r.retargetLeaf = h, cur
	r.f.log.Debug("leaf asked of a serving holder", "cid", r.leaves[cur].Cid, "holder", h)
}

// servingHolderLocked returns the provider of this content that holds it
// (not one of the crowd still fetching it), connected and not penalised,
// that has said HAVE of c or was asked for it (guard.claims: a provider
// holding part of the content only would answer DONT_HAVE, which can
// bring the origin in at once), and that sent this fetch the most leaves
// within StallTimeout (of those, the one that sent the last); "" if none.
// Asked for c already, it is asked again at the top priority: a holder
// serves each peer's wants by the priority each had when asked, and a
// leaf asked far ahead of the reader can wait behind leaves asked later.
// Counting leaves, not taking the last to deliver, picks the seed serving
// this node over a crowd member at its serving cap that has just
// finished.
//
// When none of them has sent this fetch a leaf (a one-leaf file, or the
// first leaf), it is the one that has delivered this node the most blocks,
// one of them within StallTimeout (guard.deliveries): the default demo's
// apps took photos from the origin after 1.2 s though the seed that had
// served them for seconds held them, their first want having gone to an
// app at its serving cap. The caller holds mu.
func (r *Reader) servingHolderLocked(now time.Time, c cid.Cid) peer.ID {
	var fetching []peer.ID
	if r.f.cfg.Crowd != nil {
		fetching = r.f.cfg.Crowd.Fetchers(r.t.Cid)
	}
	h := r.f.cfg.Host
	ok := func(p peer.ID) bool {
		return p != h.ID() && !slices.Contains(fetching, p) && !r.f.guard.isPenalised(p) &&
			h.Network().Connectedness(p) == network.Connected && r.f.guard.claims(p, c)
	}
	by := r.leavesSentLocked(now)
	var best peer.ID
	for _, p := range r.provs {
		x, sent := by[p]
		if !sent || !ok(p) {
			continue
		}
		if b := by[best]; best == "" || x.n > b.n || x.n == b.n && x.last.After(b.last) {
			best = p
		}
	}
	if best != "" {
		return best
	}
	most := 0
	for _, p := range r.provs {
		if n := r.f.guard.deliveries(p, now.Add(-r.f.cfg.StallTimeout)); n > most && ok(p) {
			best, most = p, n
		}
	}
	return best
}

// leavesSent is how many leaves a peer sent a fetch, and when the last.
type leavesSent struct {
	n    int
	last time.Time
}

// leavesSentLocked counts the leaves each peer sent this fetch within
// StallTimeout. The caller holds mu.
func (r *Reader) leavesSentLocked(now time.Time) map[peer.ID]leavesSent {
	by := map[peer.ID]leavesSent{}
	for i := range r.st {
		st := &r.st[i]
		if st.from == "" || now.Sub(st.fetchedAt) > r.f.cfg.StallTimeout {
			continue
		}
		x := by[st.from]
		x.n++
		x.last = later(x.last, st.fetchedAt)
		by[st.from] = x
	}
	return by
}

// askAgainLocked cancels the peer requests of the missing leaves in
// [from, to) that pick selects and, if there were any, starts a new
// bitswap session, on which schedule asks them again (a new session's
// want-haves reach every connected peer). With keep, bitswap's cancels of
// their wants at the peers asked are kept back (guard.move): the reader
// waits on them, and a holder that took one off its queue still sends it.
// (Kept back for every leaf asked again, the stripe's re-asks of leaves no
// peer had said HAVE of left holders sending blocks for old wants: the
// demo's 50-app flash crowd took 63-118 s, median 87, against 52-69.) It
// returns how many it cancelled. The caller holds mu.
func (r *Reader) askAgainLocked(now time.Time, from, to int, keep bool, pick func(i int) bool) int {
	var again []int
	for i := from; i < to; i++ {
		if st := &r.st[i]; st.peer != nil && st.data == nil && pick(i) {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return 0
	}
	if keep {
		cs := make([]cid.Cid, len(again))
		for k, i := range again {
			cs[k] = r.leaves[i].Cid
		}
		r.f.guard.move(cs...) // before the cancels bitswap sends
	}
	for _, i := range again {
		r.st[i].peer.again.Store(keep)
		r.st[i].peer.cancel()
		r.st[i].peer = nil
	}
	r.leafSess, r.sessSince = r.f.bs.NewSession(r.ctx), now
	return len(again)
}

// giveUpLocked returns the fetch's error when nothing can come: at once if
// the origin failed and no peer is known to have the content or has sent
// any of it, else after StallTimeout with nothing delivered. The caller
// holds mu.
func (r *Reader) giveUpLocked(missing bool, now time.Time, s *soon) error {
	cfg := &r.f.cfg
	if !missing {
		return nil
	}
	s.at(r.lastBlock.Add(cfg.StallTimeout))
	if r.t.hasOrigin() && r.originDead == nil {
		return nil
	}
	stalled := now.Sub(r.lastBlock) >= cfg.StallTimeout
	if !stalled && (r.originDead == nil || !r.noPeerHope()) {
		return nil
	}
	cause := r.originDead
	if cause == nil {
		cause = errors.New("no origin")
	}
	if !stalled {
		return fmt.Errorf("%w: %s: the origin failed and no peer has it: %w", ErrUnavailable, r.t.Cid, cause)
	}
	// The time it was, not StallTimeout: with an origin, the fetch gives
	// up only once the origin failed too (a hung one after its timeout).
	return fmt.Errorf("%w: %s: no block from any source for %v; origin: %w", ErrUnavailable, r.t.Cid, now.Sub(r.lastBlock).Round(time.Millisecond), cause)
}

// silentLocked returns the providers (and crowd members) to penalise: those
// that, in StallTimeout from the start, sent nothing for the content while
// connected, though asked for an answer at least PeerTimeout before (a want
// that says send DONT_HAVE: the fetch's first want-block, bitswap's wants to
// its session's peers). A provider that answered DONT_HAVE said something: it
// was listed for content it does not hold (a seed asked before its summary
// came, a holder that evicted it) and is honest; one that was only sent
// bitswap's broadcast want-haves, which ask for no answer, owes none. A member
// of the crowd fetching the content must deliver its share whatever it was
// asked: a DONT_HAVE does not excuse it, unless the origin failed (it had
// nothing to send either). A member the stripe gives no leaf has no share: it
// can send only what it took from others, and is judged as any provider is
// (the demo's 50-app flash crowd penalised about ten members per app for 30 s
// at the 3-leaf hero image, the 47 that owned none of its leaves, and then
// could not take the video from them). They are judged once; a provider first
// asked for an answer less than PeerTimeout before (its want went out late: a
// slow dial, a loaded machine) is judged when it has owed the answer that
// long, and one not yet connected (not a crowd member) or asked (the dial or
// the want still on its way) is looked at again PeerTimeout later. The caller
// holds mu.
func (r *Reader) silentLocked(now time.Time, s *soon) []peer.ID {
	if r.provsDone || len(r.provs) == 0 {
		return nil
	}
	if now.Sub(r.start) < r.f.cfg.StallTimeout {
		s.at(r.start.Add(r.f.cfg.StallTimeout))
		return nil
	}
	r.provsDone = true
	var fetching []peer.ID
	if r.f.cfg.Crowd != nil {
		fetching = r.f.cfg.Crowd.Fetchers(r.t.Cid)
	}
	g, pt := r.f.guard, r.f.cfg.PeerTimeout
	again := r.start.Add(r.f.cfg.StallTimeout + pt) // when a provider not yet asked is looked at again
	early := now.Before(again)
	var silent []peer.ID
	for _, p := range r.provs {
		member := slices.Contains(fetching, p) && r.ownsLocked(p)
		linked := g.linkedSince(p, r.start)
		quiet := !g.answeredSince(p, r.start) // said nothing this fetch
		switch {
		case g.usefulSince(p, r.start), g.isPenalised(p):
		case !linked && early && !member && !g.cutSince(p, r.start):
			// Not connected yet: the dial may be under way. (A crowd member
			// is judged on what it delivered, not on an answer it owes:
			// one not connected by StallTimeout is not judged here; see
			// unproven.go for members known only by gossip.)
			r.provsDone = false
			s.at(again)
		case !linked:
		case member && r.originDead != nil:
		case member, quiet && g.owesAnswer(p, now.Add(-pt)):
			silent = append(silent, p)
		case quiet && g.owesAnswer(p, now):
			r.provsDone = false // asked late: judged once it has owed for PeerTimeout
			s.at(now.Add(pt - g.owedFor(p, now)))
		case quiet && early:
			r.provsDone = false // not asked yet: the want may be on its way
			s.at(again)
		}
	}
	return silent
}

// ownsLocked reports whether the stripe gives p a leaf of this fetch to
// take from the origin. The caller holds mu.
func (r *Reader) ownsLocked(p peer.ID) bool {
	if r.stripe == nil {
		return false
	}
	for i := range r.leaves {
		if r.stripe.owner(i) == p {
			return true
		}
	}
	return false
}

// carryOut starts what schedule planned, without the lock.
func (r *Reader) carryOut(p *plan) {
	f := r.f
	for k, i := range p.local {
		r.goLocal(i, p.leaves[i], p.localQ[k])
	}
	if len(p.peer) > 0 {
		r.goPeers(p.peer, p.cur, p.leaves, p.peerQ, p.batch)
	}
	for k, i := range p.origin {
		r.goOrigin(i, p.leaves[i], p.origQ[k])
	}
	for _, ai := range p.connect {
		r.dial(ai, true)
	}
	if p.refresh {
		r.wg.Add(1)
		go r.refreshProviders()
	}
	if p.advertise {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := f.cfg.Advertiser.Fetching(r.ctx, r.t.Cid); err != nil && r.ctx.Err() == nil {
				f.log.Debug("advertise fetch", "cid", r.t.Cid, "err", err)
			}
		}()
	}
	for _, id := range p.silent {
		if f.guard.penaliseMissing(id, min(f.cfg.Penalty, silentPenalty)) {
			f.countPenalty()
			f.log.Info("silent provider penalised", "peer", id, "cid", r.t.Cid, "owedFor", f.guard.owedFor(id, time.Now()))
		}
	}
	if p.finish {
		r.finish(r.ctx)
	}
}

// stuckAfter is how long the reader waits on a leaf asked of peers before
// it is asked again on a new bitswap session: past the guard's deadline for
// a HAVE's block (haveDeadline), under StallTimeout.
const stuckAfter = 3 * time.Second

// allProvidersPenalised reports whether providers were found and all of
// them are penalised. The caller holds mu.
func (r *Reader) allProvidersPenalised() bool {
	if len(r.provs) == 0 {
		return false
	}
	for _, p := range r.provs {
		if !r.f.guard.isPenalised(p) {
			return false
		}
	}
	return true
}
