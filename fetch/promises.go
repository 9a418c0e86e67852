package fetch

import (
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// HAVEs that are never followed by the block. A peer that answers every want
// with HAVE and never sends the block kept bitswap's sessions waiting on it
// (a session asks one peer that said HAVE for the block, and a HAVE counts as
// an answer), so peer-only fetches failed although an honest seed was
// connected; with a constant 2 s deadline on its promises the first fetch
// beside it still took 2.5-6x its baseline. Bitswap cannot be told that a
// peer's HAVE was false (its presence table never turns a HAVE into a
// DONT_HAVE), only that the peer is gone. The guard remembers each
// want-block bitswap sends (a promise the peer is asked to keep), times each
// want-have's answer, and remembers which peers said HAVE of each block:
//
//   - A HAVE is not trusted alone: a peer that has not delivered a block
//     lately (unproven) has at most probeLimit of its HAVEs, less its late
//     promises, told to bitswap; the rest are held back until it delivers a
//     block, when they are told. So a liar has at most probeLimit blocks
//     asked of it at a time, and an honest peer is trusted after its first
//     block. A probe comes free when its block arrives from another peer
//     (forget), so over a fetch a liar beside a faster holder is asked more:
//     TestFaultHaveLiar's liars were sent up to 18 want-blocks in one
//     fetch, each cancelled when the seed's block came, and penalised once
//     lateLimit of them were late.
//   - An unproven peer's promise is late lateAfter after it was asked:
//     lateFactor times its HAVE round trip plus the time per block of the
//     fastest peer delivering, at least lateFloor and at most haveDeadline.
//     When another peer said HAVE of the block, the late peer is reset in
//     bitswap (told disconnected, then connected: bitswap forgets its HAVEs
//     and asks the other holder, while the peer's want stays open at the
//     peer), and its HAVEs of the block are void for Config.Penalty or
//     until it delivers a block. A peer that delivers is judged by bitswap's
//     own preference for the peers that sent it blocks first, and by the
//     Reader's re-ask of a stuck leaf (reader.go, stuckAfter).
//   - A peer with lateLimit late promises that has delivered nothing in
//     haveDeadline since the first is a liar: penalised (Config.Penalty);
//     unless a block of it is on its way (its bytes arriving: inflow.go),
//     when it is judged again haveDeadline later, at most
//     maxLiarDeferrals times in a row.
//
// With no other holder nothing is judged: a slow sole provider is waited for
// (and the origin hedges). A peer whose connection went broke no promise.
const (
	// haveDeadline bounds lateAfter, and is how long a peer with late
	// promises may go without delivering a block before it is a liar. It
	// is well under DefaultStallTimeout (5 s), which ends a fetch that
	// nothing feeds.
	haveDeadline = 2 * time.Second
	// lateFloor is the shortest lateAfter: a round trip and a 1 MiB block
	// on a loaded machine, with room.
	lateFloor = 100 * time.Millisecond
	// lateFactor is how many times its expected time a block may take
	// before its promise is late.
	lateFactor = 4
	// lateLimit is how many late promises, with nothing delivered for
	// haveDeadline since the first, make a liar.
	lateLimit = 2
	// probeLimit is how many HAVEs of an unproven peer bitswap hears.
	probeLimit = 2
)

type promiseKey struct {
	p peer.ID
	c cid.Cid
}

// promise is an open want-block: asked at, judged at due; weighed is when
// busy last looked for a less busy holder of it (zero: not yet).
type promise struct {
	at, due time.Time
	weighed time.Time
}

// lateness counts a peer's late promises since it last delivered a block.
type lateness struct {
	n        int
	first    time.Time
	deferred int // judgements put off in a row for a block on its way
}

// promises is a decision type: methods take the time and return what to
// do; the guard holds its lock and carries it out. Its maps are bounded by
// the wanted CIDs times the connected peers, and by the peers that
// delivered within the penalty.
type promises struct {
	open    map[promiseKey]promise       // want-blocks not yet answered
	haveAsk map[promiseKey]haveAsk       // want-haves not yet answered
	haves   map[cid.Cid]map[peer.ID]bool // peers that said HAVE of a block
	blocked map[cid.Cid]map[peer.ID]bool // peers sent a want-block of it, late or not, not cancelled
	donts   map[cid.Cid]map[peer.ID]bool // peers that said DONT_HAVE of a wanted block, and not HAVE since
	last    map[peer.ID]time.Time        // last block delivered by a peer
	count   map[peer.ID]int              // blocks a peer delivered since its deliveries were last pruned
	blk     map[peer.ID]time.Duration    // a peer's time per block, averaged
	rtt     map[peer.ID]time.Duration    // a peer's want-have to answer time, averaged
	liedTo  map[promiseKey]time.Time     // HAVEs of it from p are void until
	late    map[peer.ID]lateness         // late promises since p last delivered
	probes  map[peer.ID]map[cid.Cid]bool // HAVEs of an unproven peer bitswap heard
	held    map[peer.ID]map[cid.Cid]bool // HAVEs held back from bitswap
	penalty time.Duration                // how long voids and deliveries are remembered
	// arriving, if set, reports whether a block from p is on its way at
	// now (inflow.go): a liar's judgement waits while one is.
	arriving func(p peer.ID, now time.Time) bool
}

func newPromises(penalty time.Duration, arriving func(peer.ID, time.Time) bool) *promises {
	return &promises{
		arriving: arriving,
		open:     make(map[promiseKey]promise),
		haveAsk:  make(map[promiseKey]haveAsk),
		haves:    make(map[cid.Cid]map[peer.ID]bool),
		blocked:  make(map[cid.Cid]map[peer.ID]bool),
		donts:    make(map[cid.Cid]map[peer.ID]bool),
		last:     make(map[peer.ID]time.Time),
		count:    make(map[peer.ID]int),
		blk:      make(map[peer.ID]time.Duration),
		rtt:      make(map[peer.ID]time.Duration),
		liedTo:   make(map[promiseKey]time.Time),
		late:     make(map[peer.ID]lateness),
		probes:   make(map[peer.ID]map[cid.Cid]bool),
		held:     make(map[peer.ID]map[cid.Cid]bool),
		penalty:  penalty,
	}
}

// haveAsk is a want-have sent and not yet answered: when, and whether it
// asked for DONT_HAVE (owed: p answers either way). Bitswap's broadcast
// want-haves do not ask it, and a peer without the block rightly says
// nothing to them.
type haveAsk struct {
	at   time.Time
	owed bool
}

// asked records a want of c sent to p at now: a want-block (block) is a
// promise; a want-have times p's answer, which p owes only if the want
// asked for DONT_HAVE (owed).
func (ps *promises) asked(p peer.ID, c cid.Cid, block, owed bool, now time.Time) {
	k := promiseKey{p, c}
	if !block {
		a, ok := ps.haveAsk[k]
		if !ok {
			a.at = now
		}
		a.owed = a.owed || owed
		ps.haveAsk[k] = a
		return
	}
	addTo(ps.blocked, c, p)
	if _, ok := ps.open[k]; !ok {
		d := haveDeadline // a proven peer's promise is kept to time its blocks
		if !ps.proven(p) {
			d = ps.lateAfter(p)
		}
		ps.open[k] = promise{at: now, due: now.Add(d)}
	}
}

// answered takes the round trip of p's answer about c, if a want-have of
// it was timed.
func (ps *promises) answered(k promiseKey, now time.Time) {
	a, ok := ps.haveAsk[k]
	if !ok {
		return
	}
	delete(ps.haveAsk, k)
	ps.rtt[k.p] = average(ps.rtt[k.p], now.Sub(a.at))
}

// dropPeer removes p from mm, and the blocks it leaves with no peer.
func dropPeer(mm map[cid.Cid]map[peer.ID]bool, p peer.ID) {
	for c, m := range mm {
		delete(m, p)
		if len(m) == 0 {
			delete(mm, c)
		}
	}
}

// average is an exponentially weighted average, a quarter weight to the
// new sample; the first sample (avg 0) stands alone.
func average(avg, sample time.Duration) time.Duration {
	if avg == 0 {
		return sample
	}
	return avg + (sample-avg)/4
}

// liveHolder returns, of the peers whose HAVE of c stands and that have
// not been asked for it, the one that delivered a block to this node last
// (one that never did after those that did); "" if there is none. out
// leaves peers out. The last to deliver is the one serving this node now:
// a slow holder's time per block, learnt from a first block its burst
// sent at once, can look better than a fast one's.
func (ps *promises) liveHolder(c cid.Cid, out func(peer.ID) bool) peer.ID {
	var best peer.ID
	var bestAt time.Time
	for p := range ps.haves[c] {
		if _, asked := ps.open[promiseKey{p, c}]; asked || out(p) {
			continue
		}
		at := ps.last[p]
		if best == "" || at.After(bestAt) || at.Equal(bestAt) && p < best {
			best, bestAt = p, at
		}
	}
	return best
}

// proven reports whether p delivered a block lately (within the penalty).
func (ps *promises) proven(p peer.ID) bool {
	_, ok := ps.last[p]
	return ok
}

// have records p's HAVE of c at now. It reports whether the HAVE is void
// (p's promise of c was late: the guard answers DONT_HAVE) or held back
// (not trusted alone: bitswap does not hear it yet).
func (ps *promises) have(p peer.ID, c cid.Cid, now time.Time) (void, hold bool) {
	k := promiseKey{p, c}
	ps.answered(k, now)
	if until, ok := ps.liedTo[k]; ok {
		if now.Before(until) {
			return true, false
		}
		delete(ps.liedTo, k)
	}
	addTo(ps.haves, c, p)
	ps.unrefuse(p, c)
	if ps.trusted(p, c) {
		return false, false
	}
	addTo(ps.held, p, c)
	return false, true
}

// trusted reports whether bitswap may hear p's HAVE of c now: p delivered
// lately, or it has a probe left (then it takes it).
func (ps *promises) trusted(p peer.ID, c cid.Cid) bool {
	if ps.proven(p) || ps.probes[p][c] {
		return true
	}
	if !ps.probeFree(p) {
		return false
	}
	addTo(ps.probes, p, c)
	return true
}

// probeFree reports whether another HAVE of p may be heard as a probe:
// its probes and late promises are under probeLimit.
func (ps *promises) probeFree(p peer.ID) bool {
	return len(ps.probes[p])+ps.late[p].n < probeLimit
}

// dontHave records p's DONT_HAVE of c at now: its promise is answered.
func (ps *promises) dontHave(p peer.ID, c cid.Cid, now time.Time) {
	k := promiseKey{p, c}
	ps.answered(k, now)
	delete(ps.open, k)
	if m := ps.haves[c]; m != nil {
		delete(m, p)
	}
	if m := ps.blocked[c]; m != nil {
		delete(m, p)
	}
	delete(ps.probes[p], c)
	delete(ps.held[p], c)
}

// refused records that p answered DONT_HAVE of c, a wanted block, at
// now: dontHave, and p is noted as not holding c until it says HAVE of it
// or c is forgotten (refusedOnly).
func (ps *promises) refused(p peer.ID, c cid.Cid, now time.Time) {
	ps.dontHave(p, c, now)
	addTo(ps.donts, c, p)
}

// unrefuse forgets that p said DONT_HAVE of c.
func (ps *promises) unrefuse(p peer.ID, c cid.Cid) {
	if m := ps.donts[c]; m != nil {
		delete(m, p)
		if len(m) == 0 {
			delete(ps.donts, c)
		}
	}
}

// refusedOnly reports whether a peer said DONT_HAVE of c, no peer's HAVE
// of it stands and no peer asked for it has yet to answer: the peers asked
// do not have it (a holder that dropped a damaged block). A peer sent only
// bitswap's broadcast want-haves owes no answer: counted as yet to answer,
// one that lacks the block held the refusal back for as long as the fetch
// wanted it (TestRefusalWaitsForProviders failed 6 runs in 60 under load:
// the session's rebroadcast went to the refusing provider itself).
func (ps *promises) refusedOnly(c cid.Cid) bool {
	if len(ps.donts[c]) == 0 || len(ps.haves[c]) > 0 {
		return false
	}
	for k := range ps.open {
		if k.c == c {
			return false
		}
	}
	for k, a := range ps.haveAsk {
		if k.c == c && a.owed {
			return false
		}
	}
	return true
}

// delivered records that c arrived from p at now: every promise of c is
// kept, p is delivering (its late promises and voids are forgiven), and
// its time per block is learnt: from the want-block, or from its previous
// block if it was busy with that then.
func (ps *promises) delivered(p peer.ID, c cid.Cid, now time.Time) {
	if pr, ok := ps.open[promiseKey{p, c}]; ok {
		ps.blk[p] = average(ps.blk[p], now.Sub(ps.since(p, pr)))
	}
	ps.forget(c)
	delete(ps.late, p)
	delete(ps.probes, p)
	for k := range ps.liedTo {
		if k.p == p {
			delete(ps.liedTo, k)
		}
	}
	ps.last[p] = now
	ps.count[p]++
}

// gone drops p's open promises and HAVEs: p lost its connection (killed,
// restarted, a network cut), so what it was asked on it cannot come, and it
// broke no promise. Bitswap sends its wants again when p is back.
func (ps *promises) gone(p peer.ID) {
	for k := range ps.open {
		if k.p == p {
			delete(ps.open, k)
		}
	}
	for k := range ps.haveAsk {
		if k.p == p {
			delete(ps.haveAsk, k)
		}
	}
	dropPeer(ps.haves, p)
	dropPeer(ps.blocked, p)
	for c := range ps.donts {
		ps.unrefuse(p, c)
	}
	delete(ps.late, p)
	delete(ps.probes, p)
	delete(ps.held, p)
	delete(ps.rtt, p)
}

// penalised drops what p said and was asked (it is ignored now), and
// lifts the voids of other peers' HAVEs: a promise of theirs was judged
// late because another peer, perhaps p, said HAVE of the same block.
// It returns the voids it lifted: bitswap was told DONT_HAVE for them and
// is to hear HAVE again.
func (ps *promises) penalised(p peer.ID) (lifted []promiseKey) {
	ps.gone(p)
	for k := range ps.liedTo {
		if k.p != p {
			delete(ps.liedTo, k)
			lifted = append(lifted, k)
		}
	}
	return lifted
}

// blockedAt returns the CIDs p was sent a want-block of and has not sent
// or been told to forget (cancelled, DONT_HAVE).
func (ps *promises) blockedAt(p peer.ID) []cid.Cid {
	var cs []cid.Cid
	for c, m := range ps.blocked {
		if m[p] {
			cs = append(cs, c)
		}
	}
	return cs
}

// forget drops what is known of c (it arrived, or nobody wants it).
func (ps *promises) forget(c cid.Cid) {
	for k := range ps.open {
		if k.c == c {
			delete(ps.open, k)
		}
	}
	for k := range ps.haveAsk {
		if k.c == c {
			delete(ps.haveAsk, k)
		}
	}
	for p := range ps.haves[c] {
		delete(ps.probes[p], c)
		delete(ps.held[p], c)
	}
	delete(ps.haves, c)
	delete(ps.blocked, c)
	delete(ps.donts, c)
}

// release returns the held HAVEs bitswap may hear now (their peer
// delivered, or a probe came free) and forgets them as held.
func (ps *promises) release() (told []promiseKey) {
	for p, cs := range ps.held {
		if !ps.proven(p) && !ps.probeFree(p) {
			// No probe free: none of p's held HAVEs is trusted (trusted).
			// Walking them all at each look took 5% of the CPU of a crowd
			// of 50 apps all connected to each other.
			continue
		}
		for c := range cs {
			if ps.trusted(p, c) {
				delete(cs, c)
				told = append(told, promiseKey{p, c})
			}
		}
		if len(cs) == 0 {
			delete(ps.held, p)
		}
	}
	return told
}

// since is when p's promise pr is counted from: when it was asked, or
// p's last block if later (a peer sending the blocks asked before keeps
// its later promises).
func (ps *promises) since(p peer.ID, pr promise) time.Time {
	if last, ok := ps.last[p]; ok && last.After(pr.at) {
		return last
	}
	return pr.at
}

// lateAfter is how long an unproven peer p's block may take before its
// promise is late: lateFactor times its round trip plus the time per
// block of the fastest peer delivering, within [lateFloor, haveDeadline].
func (ps *promises) lateAfter(p peer.ID) time.Duration {
	var ref time.Duration
	for q, d := range ps.blk {
		if q != p && ps.proven(q) && (ref == 0 || d < ref) {
			ref = d
		}
	}
	return min(max(lateFactor*(ps.rtt[p]+ref), lateFloor), haveDeadline)
}

// due returns the promises late at now (their peers are to be reset in
// bitswap) and the peers to penalise as liars.
//
// A penalised peer (excluded) is no other holder: its HAVEs are worth
// nothing.
func (ps *promises) due(now time.Time, excluded func(peer.ID) bool) (late []promiseKey, liars []peer.ID) {
	for k, pr := range ps.open {
		switch {
		case now.Before(pr.due):
			continue
		case ps.proven(k.p):
			delete(ps.open, k) // it delivers: bitswap prefers it, or not
			continue
		case !ps.otherHolder(k, now, excluded):
			pr.due = now.Add(ps.lateAfter(k.p)) // nobody else to ask: wait on it
			ps.open[k] = pr
			continue
		}
		delete(ps.open, k)
		delete(ps.haves[k.c], k.p)
		delete(ps.probes[k.p], k.c)
		ps.liedTo[k] = now.Add(ps.penalty)
		late = append(late, k)
		l := ps.late[k.p]
		if l.n == 0 {
			l.first = now
		}
		l.n++
		ps.late[k.p] = l
	}
	for p, l := range ps.late {
		if l.n >= lateLimit && now.Sub(l.first) >= haveDeadline {
			if l.deferred < maxLiarDeferrals && ps.arriving != nil && ps.arriving(p, now) {
				// A busy holder's block is on its way: judged again
				// a haveDeadline on, unless it delivers meanwhile.
				ps.late[p] = lateness{n: l.n, first: now, deferred: l.deferred + 1}
				continue
			}
			delete(ps.late, p)
			if excluded == nil || !excluded(p) {
				liars = append(liars, p)
			}
		}
	}
	ps.prune(now)
	return late, liars
}

// prune forgets deliveries older than the penalty (with the peers' block
// times) and voids that ended.
func (ps *promises) prune(now time.Time) {
	for p, last := range ps.last {
		if now.Sub(last) >= ps.penalty {
			delete(ps.last, p)
			delete(ps.blk, p)
			delete(ps.count, p)
		}
	}
	for k, until := range ps.liedTo {
		if !now.Before(until) {
			delete(ps.liedTo, k)
		}
	}
}

// otherHolder reports whether a peer other than k.p said HAVE of k.c and
// has not been late with it.
func (ps *promises) otherHolder(k promiseKey, now time.Time, excluded func(peer.ID) bool) bool {
	for q := range ps.haves[k.c] {
		if q == k.p || (excluded != nil && excluded(q)) {
			continue
		}
		if until, ok := ps.liedTo[promiseKey{q, k.c}]; ok && now.Before(until) {
			continue
		}
		return true
	}
	return false
}

// busyAfter is how long a want-block may wait at a peer that delivers
// before busy looks for a less busy holder of the block.
const busyAfter = 500 * time.Millisecond

// maxAskedForMove is how many peers asked for a block keep busy from
// moving it to another. In the all-connected 50-app crowd one run logged
// 65,530 moves without a bound, 2,623 with two and 4,709 with three; the
// default demo's apps took 1.06 origin copies (median of nine) with two
// and 1.02 with three (six), against 1.01 without (twelve).
const maxAskedForMove = 3

// busy returns the promises of delivering peers asked busyAfter ago or
// more (looked at again every busyAfter while they are open) that another
// peer can keep sooner, each with that peer: one that said HAVE of the
// block (bitswap heard it, and it was not late with it), not yet asked for
// it, with the fewest want-blocks of this node open, fewer than the busy
// peer. Bitswap's session gives each want-block to one peer that said
// HAVE, favouring the peers that sent it blocks first, and waits on it: in
// a crowd every member asked the first holders for every leaf while the
// members that held them sat idle. Bitswap is to hear DONT_HAVE of each
// from its peer and HAVE from the other: its session then picks again
// among the peers that said HAVE (its presence table never turns a HAVE
// into a DONT_HAVE, so the busy peer stays one of them, less likely the
// more blocks the other has sent first), and the next look tries again if
// it picked the busy peer (a promise moved stays open for it). The want
// stays open at the busy peer, whose block, if it comes first, is taken.
// A block already asked of maxAskedForMove peers is not moved again: where
// many members hold every leaf (a crowd all connected to each other), each
// look found another lighter holder and each want-block went to peer after
// peer, all of which sent it. excluded leaves peers out as in due.
func (ps *promises) busy(now time.Time, excluded func(peer.ID) bool) (moved []move) {
	var load map[peer.ID]int
	for k, pr := range ps.open {
		if !ps.proven(k.p) || now.Before(pr.weighAt()) {
			continue
		}
		pr.weighed = now // also when bounded: next would call for a look at once
		if len(ps.blocked[k.c]) < maxAskedForMove {
			if load == nil {
				load = ps.load()
			}
			if q := ps.lighterHolder(k, now, excluded, load); q != "" {
				load[q]++
				pr.due = later(pr.due, now.Add(busyAfter)) // open for the next look
				moved = append(moved, move{k, q})
			}
		}
		ps.open[k] = pr
	}
	return moved
}

// weighAt is when busy is to look at pr next.
func (pr promise) weighAt() time.Time {
	return later(pr.at, pr.weighed).Add(busyAfter)
}

// move is a want-block to take from a busy peer (from.p) to another (to).
type move struct {
	from promiseKey
	to   peer.ID
}

// load counts the open promises of each peer.
func (ps *promises) load() map[peer.ID]int {
	n := make(map[peer.ID]int)
	for k := range ps.open {
		n[k.p]++
	}
	return n
}

// lighterHolder returns the peer other than k.p that said HAVE of k.c,
// bitswap heard it and it was not late with it, has not been asked for
// k.c, and has the fewest open promises (load), fewer than k.p; "" if
// none.
func (ps *promises) lighterHolder(k promiseKey, now time.Time, excluded func(peer.ID) bool, load map[peer.ID]int) peer.ID {
	var best peer.ID
	for q := range ps.haves[k.c] {
		switch {
		case q == k.p, excluded != nil && excluded(q), ps.held[q][k.c], ps.blocked[k.c][q]:
			continue
		}
		if until, ok := ps.liedTo[promiseKey{q, k.c}]; ok && now.Before(until) {
			continue
		}
		if load[q] < load[k.p] && (best == "" || load[q] < load[best] || load[q] == load[best] && q < best) {
			best = q
		}
	}
	return best
}

// next is when due or busy has something to do at the earliest, or false.
func (ps *promises) next() (time.Time, bool) {
	var t time.Time
	for k, pr := range ps.open {
		if t.IsZero() || pr.due.Before(t) {
			t = pr.due
		}
		if b := pr.weighAt(); ps.proven(k.p) && b.Before(t) {
			t = b
		}
	}
	for _, l := range ps.late {
		if d := l.first.Add(haveDeadline); l.n >= lateLimit && (t.IsZero() || d.Before(t)) {
			t = d
		}
	}
	return t, !t.IsZero()
}

// addTo adds v to the set m[k], making the set on first use: a peer's
// CIDs, or a CID's peers.
func addTo[K, V comparable](m map[K]map[V]bool, k K, v V) {
	s := m[k]
	if s == nil {
		s = make(map[V]bool)
		m[k] = s
	}
	s[v] = true
}
