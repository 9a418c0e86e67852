package announce

import (
	"container/list"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Replay protection: see the package documentation, "Replay".
const (
	// replayWindow is how many of an author's sequence numbers below the
	// highest accepted one are still accepted once each (messages that
	// overtook each other in the mesh).
	replayWindow = 64
	// firstSlack is how many sequence numbers just below the first one
	// seen from an author are still accepted once each: pubsub validates
	// messages concurrently, so an author's first two messages to arrive
	// can be checked in either order (the older one was refused, and its
	// announcement lost until the author's next summary).
	firstSlack = 2
	// maxReplayAuthors bounds the authors whose sequence numbers are
	// remembered: about 100 bytes each.
	maxReplayAuthors = 16384
)

// authorSeq is what the replay guard remembers of one author.
type authorSeq struct {
	p    peer.ID
	high uint64 // the highest sequence number accepted
	seen uint64 // bit i set: high-i was accepted (or predates the first)
	in   *list.List
	el   *list.Element
}

// replayGuard accepts each sequence number of an author at most once and
// none from before the first one it saw: gossipsub authors (go-libp2p-pubsub
// and @libp2p/gossipsub alike) count their sequence numbers up from their
// start time in nanoseconds, so a signed message captured and replayed
// later, by anyone, carries a number the guard has seen or has passed. It
// is a decision type: no clock, no I/O. It is safe for concurrent use.
type replayGuard struct {
	max      int
	evidence func(peer.ID) int // nil: every author is unknown

	mu      sync.Mutex
	authors map[peer.ID]*authorSeq
	unknown list.List // *authorSeq without evidence, least recently accepted first
	kept    list.List // *authorSeq with evidence, likewise
}

func newReplayGuard(max int, evidence func(peer.ID) int) *replayGuard {
	return &replayGuard{max: max, evidence: evidence, authors: make(map[peer.ID]*authorSeq)}
}

// accept reports whether seq is new from p, and records it if so: above
// every number accepted from p, or one of the replayWindow numbers below
// the highest that was not accepted yet. The first number seen from p
// counts as the highest, with everything below it as seen but the
// firstSlack numbers just below it. When full, the
// guard forgets the author without evidence accepted least recently (one
// with evidence only when no other is left): a flood of new keys cannot
// make it forget the peers this node trusts.
func (g *replayGuard) accept(p peer.ID, seq uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.authors[p]
	if a == nil {
		if len(g.authors) >= g.max {
			g.forgetOldest()
		}
		a = &authorSeq{p: p, high: seq, seen: ^uint64(0) &^ (1<<(firstSlack+1) - 2)}
		g.authors[p] = a
		g.touch(a)
		return true
	}
	switch {
	case seq > a.high:
		if d := seq - a.high; d < replayWindow {
			a.seen = a.seen<<d | 1
		} else {
			a.seen = 1
		}
		a.high = seq
	case a.high-seq < replayWindow && a.seen&(1<<(a.high-seq)) == 0:
		a.seen |= 1 << (a.high - seq)
	default:
		return false
	}
	g.touch(a)
	return true
}

// touch moves a to the back of its list, which its evidence chooses.
func (g *replayGuard) touch(a *authorSeq) {
	l := &g.unknown
	if g.evidence != nil && g.evidence(a.p) > 0 {
		l = &g.kept
	}
	if a.in != nil {
		a.in.Remove(a.el)
	}
	a.in, a.el = l, l.PushBack(a)
}

func (g *replayGuard) forgetOldest() {
	el := g.unknown.Front()
	if el == nil {
		el = g.kept.Front()
	}
	if el == nil {
		return
	}
	a := el.Value.(*authorSeq)
	a.in.Remove(el)
	delete(g.authors, a.p)
}
