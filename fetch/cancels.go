package fetch

import (
	"slices"
	"sync"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Blocks a peer cancelled are not sent. boxo's server takes a peer's wanted
// blocks off its queue (up to MaxOutstandingBytesPerPeer at a time), reads
// them, which at a serving cap means waiting for the budget (servingStore),
// and then sends them: a cancel that comes in between, as the peer got the
// block from another holder, is not heeded, and the block goes out anyway.
// Counted in the demo (one run each, every node's sends): in the 50-app flash
// crowd the apps sent 3,114 MB for 2,542 MB their peers kept, and 438 MB of
// the 572 MB wasted went to peers that had cancelled the block before it was
// sent; in the default demo (a seed, 20 apps) 214 of the 365 MB wasted. The
// guard drops such blocks from a message as it goes out, as boxo's server
// drops a cancelled want it has not yet taken off its queue (and they do not
// count as served). Measured against the code before in interleaved runs: the
// default demo's peers sent 1.13 times the bytes their peers kept (median of
// ten) against 1.36, the flash crowd's 1.05-1.08 against 1.20-1.25 (three
// each), offload and origin copies within the noise. (The budget of the cap
// they took is not given back: given to the next block, a peer at a tenth of
// the origin's rate, its blocks cancelled as the origin took them, sent the
// next ones at once, looked faster than it was, and a fetch beside it took 3
// times as long as from the origin alone instead of 1.5, TestSlowPeer.)
const (
	// cancelFor is how long a cancel is remembered: longer than a block
	// taken off the queue waits for the cap and a send slot.
	cancelFor = time.Minute
	// cancelPeerMax and cancelMax bound the cancels remembered for one
	// peer and in all; past them new ones are not noted (their blocks
	// go out, as boxo would send them).
	cancelPeerMax = 1024
	cancelMax     = 1 << 16
)

// cancelBook remembers, per peer, the blocks it cancelled and has not
// wanted again since. It is safe for concurrent use.
type cancelBook struct {
	mu sync.Mutex
	by map[peer.ID]map[cid.Cid]time.Time
	n  int // entries in by
}

func newCancelBook() *cancelBook {
	return &cancelBook{by: make(map[peer.ID]map[cid.Cid]time.Time)}
}

// note records the wants and cancels of m, received from p at now: a
// cancel is remembered, a want (of either kind) forgets the cancel before
// it.
func (b *cancelBook) note(p peer.ID, m bsmsg.BitSwapMessage, now time.Time) {
	wl := m.Wantlist()
	if len(wl) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range wl {
		if e.Cancel {
			b.addLocked(p, e.Cid, now)
		} else {
			b.forgetLocked(p, e.Cid)
		}
	}
}

// addLocked notes p's cancel of c at now, if there is room. The caller
// holds mu.
func (b *cancelBook) addLocked(p peer.ID, c cid.Cid, now time.Time) {
	if _, ok := b.by[p][c]; !ok {
		if !b.roomLocked(p, now) {
			return
		}
		if b.by[p] == nil {
			b.by[p] = make(map[cid.Cid]time.Time)
		}
		b.n++
	}
	b.by[p][c] = now
}

// roomLocked reports whether a new cancel of p may be noted, pruning the
// cancels older than cancelFor when a bound is reached. The caller holds
// mu.
func (b *cancelBook) roomLocked(p peer.ID, now time.Time) bool {
	room := func() bool { return len(b.by[p]) < cancelPeerMax && b.n < cancelMax }
	if room() {
		return true
	}
	for q, cs := range b.by {
		for c, t := range cs {
			if now.Sub(t) > cancelFor {
				b.forgetLocked(q, c)
			}
		}
	}
	return room()
}

// forgetLocked forgets p's cancel of c, if noted. The caller holds mu.
func (b *cancelBook) forgetLocked(p peer.ID, c cid.Cid) {
	cs := b.by[p]
	if _, ok := cs[c]; !ok {
		return
	}
	delete(cs, c)
	b.n--
	if len(cs) == 0 {
		delete(b.by, p)
	}
}

// without returns m without the blocks p cancelled within cancelFor of
// now (forgetting those cancels: the block is dealt with), and their CIDs;
// m itself and none if there are none.
func (b *cancelBook) without(p peer.ID, m bsmsg.BitSwapMessage, now time.Time) (bsmsg.BitSwapMessage, []cid.Cid) {
	var drop []cid.Cid
	b.mu.Lock()
	for _, blk := range m.Blocks() {
		if t, ok := b.by[p][blk.Cid()]; ok {
			if now.Sub(t) <= cancelFor {
				drop = append(drop, blk.Cid())
			}
			b.forgetLocked(p, blk.Cid())
		}
	}
	b.mu.Unlock()
	if len(drop) == 0 {
		return m, nil
	}
	return rebuilt(m, func(blk blocks.Block) bool { return !slices.ContainsFunc(drop, blk.Cid().Equals) }, nil), drop
}

// gone forgets p's cancels: what it asked went with the connection.
func (b *cancelBook) gone(p peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n -= len(b.by[p])
	delete(b.by, p)
}
