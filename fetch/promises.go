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
// connected. The guard remembers each want-block bitswap sends (a promise
// the peer is asked to keep) and which peers said HAVE of each block. When a
// block has not come haveDeadline after it was asked of p, p delivered no
// block meanwhile (a busy peer that keeps delivering is not judged), and
// another peer said HAVE of it, the promise is broken: bitswap is told
// DONT_HAVE from p for that block, so the session asks the other holder;
// HAVEs of it from p are answered the same way for Config.Penalty; and a
// peer that broke brokenLimit promises with no block delivered since the
// first is penalised (Config.Penalty). With no other holder nothing is
// judged: a slow sole provider is waited for (and the origin hedges).
const (
	// haveDeadline is how long after a want-block the block must have
	// arrived. It is well under DefaultStallTimeout (5 s), which ends a
	// fetch that nothing feeds.
	haveDeadline = 2 * time.Second
	// brokenLimit is how many broken promises, with no block delivered
	// since the first, get a peer penalised.
	brokenLimit = 3
)

type promiseKey struct {
	p peer.ID
	c cid.Cid
}

// promises is a decision type: methods take the time and return what to
// do; the guard holds its lock and carries it out.
type promises struct {
	open   map[promiseKey]time.Time     // want-block sent at
	haves  map[cid.Cid]map[peer.ID]bool // peers that said HAVE of a block
	last   map[peer.ID]time.Time        // last block delivered by a peer
	liedTo map[promiseKey]time.Time     // HAVEs of it from p are void until
	broken map[peer.ID]int              // promises broken since p last delivered
}

func newPromises() *promises {
	return &promises{
		open:   make(map[promiseKey]time.Time),
		haves:  make(map[cid.Cid]map[peer.ID]bool),
		last:   make(map[peer.ID]time.Time),
		liedTo: make(map[promiseKey]time.Time),
		broken: make(map[peer.ID]int),
	}
}

// asked records a want-block of c sent to p at now.
func (ps *promises) asked(p peer.ID, c cid.Cid, now time.Time) {
	k := promiseKey{p, c}
	if _, ok := ps.open[k]; !ok {
		ps.open[k] = now
	}
}

// have records p's HAVE of c at now. It reports whether the HAVE is void
// (p broke its promise of c before): then the guard answers DONT_HAVE.
func (ps *promises) have(p peer.ID, c cid.Cid, now time.Time) (void bool) {
	k := promiseKey{p, c}
	if until, ok := ps.liedTo[k]; ok {
		if now.Before(until) {
			return true
		}
		delete(ps.liedTo, k)
	}
	m := ps.haves[c]
	if m == nil {
		m = make(map[peer.ID]bool)
		ps.haves[c] = m
	}
	m[p] = true
	return false
}

// dontHave records p's DONT_HAVE of c: its promise is answered.
func (ps *promises) dontHave(p peer.ID, c cid.Cid) {
	delete(ps.open, promiseKey{p, c})
	if m := ps.haves[c]; m != nil {
		delete(m, p)
	}
}

// delivered records that c arrived from p at now: every promise of c is
// kept, and p is delivering.
func (ps *promises) delivered(p peer.ID, c cid.Cid, now time.Time) {
	ps.forget(c)
	delete(ps.broken, p)
	ps.last[p] = now
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
	for _, m := range ps.haves {
		delete(m, p)
	}
	delete(ps.broken, p)
}

// penalised drops what p said and was asked (it is ignored now), and
// lifts the voids of other peers' HAVEs: a promise of theirs was judged
// broken because another peer, perhaps p, said HAVE of the same block, so
// a busy but honest seed was cut off from blocks only p claimed to have.
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

// forget drops what is known of c (it arrived, or nobody wants it).
func (ps *promises) forget(c cid.Cid) {
	for k := range ps.open {
		if k.c == c {
			delete(ps.open, k)
		}
	}
	delete(ps.haves, c)
}

// due returns the promises broken at now, and the peers to penalise: those
// that broke brokenLimit promises with no block delivered since the first.
//
// A penalised peer (excluded) is no other holder: its HAVEs are worth
// nothing.
func (ps *promises) due(now time.Time, penalty time.Duration, excluded func(peer.ID) bool) (broken []promiseKey, liars []peer.ID) {
	for k, at := range ps.open {
		if now.Sub(at) < haveDeadline {
			continue
		}
		if last, ok := ps.last[k.p]; ok && now.Sub(last) < haveDeadline {
			ps.open[k] = last // busy: it delivered lately
			continue
		}
		if !ps.otherHolder(k, now, excluded) {
			ps.open[k] = now // nobody else to ask: wait on it
			continue
		}
		delete(ps.open, k)
		delete(ps.haves[k.c], k.p)
		ps.liedTo[k] = now.Add(penalty)
		broken = append(broken, k)
		ps.broken[k.p]++
		if ps.broken[k.p] == brokenLimit {
			liars = append(liars, k.p)
		}
	}
	for p, last := range ps.last {
		if now.Sub(last) >= penalty {
			delete(ps.last, p)
		}
	}
	for k, until := range ps.liedTo {
		if !now.Before(until) {
			delete(ps.liedTo, k)
		}
	}
	return broken, liars
}

// otherHolder reports whether a peer other than k.p said HAVE of k.c and
// has not broken a promise of it.
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

// next is when due has something to do at the earliest, or false.
func (ps *promises) next() (time.Time, bool) {
	var t time.Time
	for _, at := range ps.open {
		if d := at.Add(haveDeadline); t.IsZero() || d.Before(t) {
			t = d
		}
	}
	return t, !t.IsZero()
}
