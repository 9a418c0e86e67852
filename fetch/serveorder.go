package fetch

import (
	"math"
	"sync"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bsserver "github.com/ipfs/boxo/bitswap/server"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Whose request a holder serves next (Config.ServeEvenly, off by default;
// mesh sets it for seeds).
//
// Boxo's server picks the next peer to serve by comparing peers (its
// fairPeerComparator): fewer blocks being sent first, then more requests
// pending, then a hash of the peer ID salted once per process. In the demo
// site's 50-app flash crowd (`go run ./examples/demo -peers 50 -seeds 0
// -arrival 100ms`) the first app to hold the video, at its 4 MiB/s serving
// cap, served its askers very unevenly: 38, 36 and 22 block messages to
// three of 13 and 4 to 9 to others, which waited 17 to 25 s between two
// (another run: 25, 21, 20, 18 against 4 to 8, gaps up to 35 s); the apps
// it served least took 5 to 43 of the video's 50 leaves from the origin.
// Which of boxo's rules does it was not pinned down: a holder asked by
// scripted peers (TestServeEvenlyNoStarving) or by six plain fetches
// (TestServeEvenlyBesideFetches) serves a one-block peer within a few
// blocks under either order. With ServeEvenly the Fetcher orders the
// server's requests itself (bitswap.WithTaskComparator, which replaces
// boxo's comparator):
//
//   - between peers, a block a reader waits on (a want-block with the top
//     priority, topPriority: the Fetcher gives it to the leaf its reader
//     needs next, see urgent.go) goes before any peer's read-ahead;
//   - then the peer with the fewest bytes in flight to it (read for
//     sending, not yet sent) plus bytes sent to it lately (decaying by e
//     every serveMemory) goes first, whatever it has pending: a peer that
//     was sent little lately is served next;
//   - within a peer's requests, the higher priority its wantlist gave
//     first (as boxo does), then by CID, so that the order is total.
//
// A first version that counted only bytes sent had the first holder send
// 6 askers 22 to 25 messages each, no gap over 4.5 s; this one, with bytes
// in flight, 4 to 11 to each of 15, gaps up to 18 s (one logged run each),
// against boxo's 4 to 38 with gaps up to 35 s. The crowd's origin copies,
// against boxo's order with every app serving evenly, alternated: lower in
// 8 of 16 pairs, median 2.70 against 2.95 copies of the site, completion
// p50 median 42.1 s against 43.0; the first version lower in 4 of 4
// (2.77-3.22 against 3.39-4.07). No gain shown for apps, so mesh leaves
// it off for them; what it would take is in docs/fetch.md ("An app's
// serving order, tried").
//
// Seeds. In the default demo (a seed at its 128 MiB/s cap serving 20
// apps) one app in three runs or so took 6 to 9 leaves of the video from
// the origin, in two of three logged runs its last ones: the seed, sending
// 130 blocks a second to the others, sent it one in 1.3 s. Boxo's
// comparator, among peers with as many blocks being sent, serves first the
// one with more requests pending (up to 16), and an app near the end of a
// file has few. By load alone (this order without its first rule) the seed
// did no better (offload median 0.948 in 10 runs); with a waited block
// first, offload 0.9509-0.9524 (median 0.9524, the ceiling 20/21: the apps
// took nothing from the origin in 15 of 18 runs) against 0.942-0.9524
// (median 0.9511, 10 of 18 at 0.95 or more) for boxo's order interleaved,
// completion p50 median 5.5 s against 5.0 s: the apps wait for the seed
// rather than take from the origin. Beside the bench's 50-app crowds with
// a seed (two runs each) it was no worse: 0.62 and 0.66 copies against
// 0.19 and 0.66 (100 ms), 0.81 and 1.23 against 1.11 and 1.06 (Poisson).
// So mesh sets it for seeds, with a peer at its most under way put last
// (peerBefore: without it the order let non-reading peers stall a seed);
// the final code, 8 more pairs: offload 0.9518-0.9524 against
// 0.9446-0.9524 (5 of 8 at 0.95 or more), completion p50 median 5.3 s
// against 5.2 s. A peer that marks every want as waited gains
// no more than its turn among the waited blocks, which go by load: once it
// has been sent more than another peer lately, that peer's waited block
// goes first.
//
// Bytes in flight keep the order right between the moment boxo takes a
// peer's request and the moment the block is sent (a holder at its cap
// waits for its budget in between): boxo re-places a peer in its queue
// only when it takes from it or a send to it ends, and a peer whose taking
// changed nothing would be taken again by every free worker. The server
// does not say whose request a read is for, so a read of a block is put to
// the peer this order puts first among those that want it (reading); the
// send corrects it. The order's keys change between boxo's re-placings
// (bytes sent decay), so its queue is ordered only as of each peer's last
// re-placing, as with boxo's own time-based rule.
type serveOrder struct {
	mu     sync.Mutex
	peers  map[peer.ID]*servedPeer
	maxOut int    // bytes boxo has under way for one peer at most (Config.MaxOutstandingBytesPerPeer); <= 0: no bound
	onNote func() // called after note (tests)
}

// servedPeer is what serveOrder knows of one peer.
type servedPeer struct {
	wants    map[cid.Cid]int32      // the priority of each block it wants
	inflight map[cid.Cid]inflightAt // blocks read for it, not yet sent
	flying   int                    // the bytes of inflight
	sent     float64                // bytes sent, decayed to sentAt
	sentAt   time.Time
}

type inflightAt struct {
	n  int
	at time.Time
}

const (
	// serveMemory is how fast bytes sent to a peer stop counting: by a
	// factor e in serveMemory. About the time a holder at an app's cap
	// takes to serve each of a few peers a block.
	serveMemory = 2 * time.Second
	// maxOrderWants bounds the wants remembered per peer (boxo queues at
	// most 1024 per peer); later ones count as priority 0.
	maxOrderWants = 1024
	// inflightFor is how long a read counts as in flight if no send
	// tells what became of it (the server dropped the message).
	inflightFor = 30 * time.Second
)

// newServeOrder returns an order for a server that has at most maxOut
// bytes under way for one peer (<= 0: no bound).
func newServeOrder(maxOut int) *serveOrder {
	return &serveOrder{peers: make(map[peer.ID]*servedPeer), maxOut: maxOut}
}

// peerLocked returns p's record, made if need be. The caller holds mu.
func (o *serveOrder) peerLocked(p peer.ID) *servedPeer {
	sp := o.peers[p]
	if sp == nil {
		sp = &servedPeer{wants: make(map[cid.Cid]int32), inflight: make(map[cid.Cid]inflightAt)}
		o.peers[p] = sp
	}
	return sp
}

// note records the wantlist of m, received from p.
func (o *serveOrder) note(p peer.ID, m bsmsg.BitSwapMessage) {
	if o == nil {
		return
	}
	wl := m.Wantlist()
	if len(wl) == 0 && !m.Full() {
		return
	}
	o.mu.Lock()
	defer func() {
		fn := o.onNote
		o.mu.Unlock()
		if fn != nil {
			fn()
		}
	}()
	sp := o.peerLocked(p)
	if m.Full() {
		clear(sp.wants)
	}
	for _, e := range wl {
		switch {
		case e.Cancel:
			delete(sp.wants, e.Cid)
		case len(sp.wants) < maxOrderWants:
			sp.wants[e.Cid] = e.Priority
		default:
			if _, ok := sp.wants[e.Cid]; ok {
				sp.wants[e.Cid] = e.Priority
			}
		}
	}
}

// reading puts a read of c (n bytes) for sending to the peer that wants
// it and comes first in the order, if any peer wants it.
func (o *serveOrder) reading(c cid.Cid, n int, now time.Time) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var to peer.ID
	var best *servedPeer
	for p, sp := range o.peers {
		if _, ok := sp.wants[c]; !ok {
			continue
		}
		if _, ok := sp.inflight[c]; ok {
			continue
		}
		if best == nil || o.peerBefore(p, sp, sp.wants[c], to, best, best.wants[c], now) {
			to, best = p, sp
		}
	}
	if best == nil {
		return
	}
	best.pruneLocked(now)
	best.inflight[c] = inflightAt{n, now}
	best.flying += n
}

// peerBefore reports whether peer a, asking for a block with priority pa,
// is served before peer b asking with pb: a peer with its most under way
// (maxed) last, then a block a reader waits on (topPriority) first, then
// the lighter load, then the higher priority, then the lower peer ID. The
// caller holds mu.
//
// Boxo's queue takes the next tasks from the peer its order puts first
// only, and from a peer with maxOut bytes under way it takes none: that
// peer first, no one was served until one of its sends ended. A peer that
// never reads its blocks keeps its sends under way until their deadlines,
// and was sent nothing, so by load it came first: three such peers held
// an honest fetch from a seed serving in this order to 10 s (3 s with the
// waited block first; TestFaultNonReadingPeer). Boxo's own order puts the
// peers with fewer blocks under way first.
func (o *serveOrder) peerBefore(a peer.ID, sa *servedPeer, pa int32, b peer.ID, sb *servedPeer, pb int32, now time.Time) bool {
	if ma, mb := sa.maxed(o.maxOut), sb.maxed(o.maxOut); ma != mb {
		return mb
	}
	if wa, wb := pa == topPriority, pb == topPriority; wa != wb {
		return wa
	}
	if la, lb := sa.load(now), sb.load(now); la != lb {
		return la < lb
	}
	if pa != pb {
		return pa > pb
	}
	return a < b
}

// unread takes back a read of c that ended without a block (the want was
// cancelled while the read waited for the serving budget).
func (o *serveOrder) unread(c cid.Cid) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, sp := range o.peers {
		if sp.land(c) {
			return
		}
	}
}

// sent records that bitswap's server has tried to send m to p: its blocks
// are no longer in flight to anyone (those p cancelled meanwhile were
// taken out, and a failed send sent nothing), and n bytes of them count as
// sent to p.
func (o *serveOrder) sent(p peer.ID, m bsmsg.BitSwapMessage, n int64, now time.Time) {
	if o == nil || len(m.Blocks()) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	sp := o.peerLocked(p)
	for _, b := range m.Blocks() {
		c := b.Cid()
		if !sp.land(c) {
			for _, q := range o.peers { // read as another's, it came out as p's
				if q.land(c) {
					break
				}
			}
		}
		delete(sp.wants, c)
	}
	if n > 0 {
		sp.sent = sp.decayed(now) + float64(n)
		sp.sentAt = now
	}
}

// forget drops what is known of p (it disconnected).
func (o *serveOrder) forget(p peer.ID) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.peers, p)
}

// less is the server's TaskComparator: whether task a is served before b.
func (o *serveOrder) less(a, b *bsserver.TaskInfo) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	sa, sb := o.peers[a.Peer], o.peers[b.Peer]
	pa, pb := sa.priority(a.Cid), sb.priority(b.Cid)
	if a.Peer == b.Peer {
		if pa != pb {
			return pa > pb
		}
		return a.Cid.KeyString() < b.Cid.KeyString()
	}
	return o.peerBefore(a.Peer, sa, pa, b.Peer, sb, pb, time.Now())
}

// priority is the priority p gave c (0 if not known).
func (sp *servedPeer) priority(c cid.Cid) int32 {
	if sp == nil {
		return 0
	}
	return sp.wants[c]
}

// maxed reports whether sp has maxOut bytes or more in flight (maxOut
// <= 0: never).
func (sp *servedPeer) maxed(maxOut int) bool {
	return sp != nil && maxOut > 0 && sp.flying >= maxOut
}

// load is what orders peers: bytes in flight plus bytes sent, decayed.
func (sp *servedPeer) load(now time.Time) float64 {
	if sp == nil {
		return 0
	}
	return float64(sp.flying) + sp.decayed(now)
}

// decayed is the bytes sent, decayed to now.
func (sp *servedPeer) decayed(now time.Time) float64 {
	if sp.sentAt.IsZero() {
		return 0
	}
	return sp.sent * math.Exp(-float64(now.Sub(sp.sentAt))/float64(serveMemory))
}

// land takes c out of flight, reporting whether it was in flight.
func (sp *servedPeer) land(c cid.Cid) bool {
	f, ok := sp.inflight[c]
	if ok {
		delete(sp.inflight, c)
		sp.flying -= f.n
	}
	return ok
}

// pruneLocked forgets the reads in flight for longer than inflightFor.
func (sp *servedPeer) pruneLocked(now time.Time) {
	for c, f := range sp.inflight {
		if now.Sub(f.at) > inflightFor {
			sp.land(c)
		}
	}
}
