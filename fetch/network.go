package fetch

import (
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/boxo/bitswap"
	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	bsnet "github.com/ipfs/boxo/bitswap/network"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// guard sits between bitswap and its network. It drops the messages of
// penalised peers and hides them from bitswap (a penalised peer looks
// disconnected, so sessions drop it), notices blocks nobody asked for (a
// corrupted block arrives under the CID its bytes hash to, which no fetch
// wants) and remembers which peer sent each wanted block first, for the
// accounting.
type guard struct {
	bsnet.BitSwapNetwork
	f *Fetcher

	mu        sync.Mutex
	receivers []bsnet.Receiver
	penalised map[peer.ID]time.Time   // until
	wanted    map[cid.Cid]int         // CIDs open fetches want, with a count
	recent    map[cid.Cid]time.Time   // CIDs wanted until recently, with when
	sender    map[cid.Cid]peer.ID     // first sender of a wanted block
	useful    map[peer.ID]time.Time   // last block or HAVE of a wanted CID
	answered  map[peer.ID]time.Time   // last message with a block, HAVE or DONT_HAVE
	expect    map[peer.ID]time.Time   // first want that asked for an answer, not answered since
	gone      map[peer.ID]time.Time   // last disconnect, as bitswap saw it
	timers    map[peer.ID]*time.Timer // penalty ends
	missing   map[peer.ID]bool        // penalised only for blocks it did not send (liftMissingLocked)
	lifts     map[peer.ID]lifts       // penalties lifted lately (liftMissingLocked)
	prio      map[cid.Cid]int32       // wire priority of a wanted leaf: its urgency
	sends     *sendLimiter            // deadlines of what the server sends
	proms     *promises               // HAVEs not yet followed by the block
	side      *sideBlocks             // blocks the inbound filter took out of messages (nil: none)
	haves     *haveAnswers            // want-haves of held blocks, answered outside boxo (haves.go)
	cancels   *cancelBook             // blocks peers cancelled, not sent (cancels.go)
	moved     map[cid.Cid]time.Time   // leaves asked again: their cancels kept back (keepWanted)
	owed      map[cid.Cid][]peer.ID   // peers to cancel a leaf at when it comes (arrived)
	promTimer *time.Timer             // checks the promises when one is due
	stopped   bool
	life      sync.RWMutex // held for reading while forgiving; stop takes it
}

func newGuard(n bsnet.BitSwapNetwork, f *Fetcher) *guard {
	return &guard{
		BitSwapNetwork: n,
		f:              f,
		penalised:      make(map[peer.ID]time.Time),
		wanted:         make(map[cid.Cid]int),
		recent:         make(map[cid.Cid]time.Time),
		sender:         make(map[cid.Cid]peer.ID),
		useful:         make(map[peer.ID]time.Time),
		answered:       make(map[peer.ID]time.Time),
		expect:         make(map[peer.ID]time.Time),
		gone:           make(map[peer.ID]time.Time),
		timers:         make(map[peer.ID]*time.Timer),
		missing:        make(map[peer.ID]bool),
		lifts:          make(map[peer.ID]lifts),
		prio:           make(map[cid.Cid]int32),
		sends:          newSendLimiter(),
		proms:          newPromises(f.cfg.Penalty, f.inflow.recent),
		haves:          newHaveAnswers(f.ctx, f.holds, n.SendMessage),
		cancels:        newCancelBook(),
		moved:          make(map[cid.Cid]time.Time),
		owed:           make(map[cid.Cid][]peer.ID),
	}
}

// Start wraps the receivers bitswap registers.
func (g *guard) Start(rs ...bsnet.Receiver) {
	g.mu.Lock()
	g.receivers = rs
	g.mu.Unlock()
	g.BitSwapNetwork.Start(guardReceiver{g})
}

// want registers CIDs a fetch wants; unwant undoes it.
func (g *guard) want(cs []cid.Cid) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range cs {
		g.wanted[c]++
	}
}

// topPriority is the wire priority of the block a reader needs next: order
// gives it to the leaf at the reader's position, the first want
// (firstwant.go) to its leaf, and a holder serves a block asked with it
// ahead of its serving cap's queue (urgent.go).
const topPriority = math.MaxInt32

// order gives each of cs the wire priority of its urgency: topPriority less
// dist, how many leaves ahead of its reader's position it was when asked.
// The serving peer sends the highest priority first (the oldest ask first
// among equals), so each reader gets the leaf it needs next first, in file
// order, and a fetch opened while another's read-ahead window is queued is
// not served after that window. (Bitswap's sessions put the wants they send
// together in a map, so the priorities they give follow no order.)
func (g *guard) order(cs []cid.Cid, dist []int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, c := range cs {
		g.prio[c] = topPriority - int32(min(max(dist[k], 0), math.MaxInt16))
	}
}

// NewMessageSender wraps bitswap's senders so that want entries go out
// with the priorities order gave.
func (g *guard) NewMessageSender(ctx context.Context, p peer.ID, opts *bsnet.MessageSenderOpts) (bsnet.MessageSender, error) {
	s, err := g.BitSwapNetwork.NewMessageSender(ctx, p, opts)
	if err != nil {
		return nil, err
	}
	return orderedSender{s, g, p}, nil
}

// SendMessage is NewMessageSender's one-shot form, which bitswap's server
// sends blocks with, synchronously, in one of its workers. Here each send
// gets a deadline for its size, at most perPeerSends run at once per peer
// (a send waiting for its turn fails after slotWait if the peer is
// stalled), and a peer that misses deadlines is put on probation, then cut
// (see sendLimiter). The blocks p cancelled since they were read for it
// are taken out (cancels.go); those sent count as served, and in the order
// the server serves peers in (serveorder.go).
func (g *guard) SendMessage(ctx context.Context, p peer.ID, m bsmsg.BitSwapMessage) error {
	g.reprioritise(m)
	var sent int64
	defer func(read bsmsg.BitSwapMessage) { g.f.order.sent(p, read, sent, time.Now()) }(m) // serveorder.go
	slots := g.sends.acquire(p, time.Now())
	defer g.sends.release(p)
	if err := g.takeSlot(ctx, p, slots); err != nil {
		return err
	}
	defer func() { <-slots }()
	m, dropped := g.cancels.without(p, m, time.Now())
	if len(dropped) > 0 {
		g.f.log.Debug("cancelled blocks not sent", "peer", p, "cids", dropped)
	}
	if m.Empty() {
		return nil
	}
	began := time.Now()
	deadline, ok := g.sends.begin(p, m.Size(), began)
	if !ok {
		return errPeerNotDraining
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	err := g.sendAsking(p, m, began, func() error {
		return g.BitSwapNetwork.SendMessage(ctx, p, streamed(m)) // wire.go: no message-sized buffer
	})
	cancel()
	if err == nil {
		sent = blockBytes(m)
		g.f.served.Add(sent)
	}
	now := time.Now()
	switch g.sends.end(p, began, err != nil && !now.Before(deadline), now) {
	case sendSlow:
		g.f.log.Info("peer not draining: one send at a time", "peer", p, "bytes", m.Size(), "dur", now.Sub(began))
	case sendCut:
		g.f.log.Info("peer not draining: disconnected", "peer", p, "bytes", m.Size(), "dur", now.Sub(began))
		_ = g.BitSwapNetwork.DisconnectFrom(context.Background(), p)
	}
	return err
}

// blockBytes is the size of the blocks in m.
func blockBytes(m bsmsg.BitSwapMessage) int64 {
	var n int64
	for _, b := range m.Blocks() {
		n += int64(len(b.RawData()))
	}
	return n
}

// takeSlot takes one of p's send slots, waiting while p drains; it fails
// after slotWait of waiting on a stalled peer (see sendLimiter.stalled).
func (g *guard) takeSlot(ctx context.Context, p peer.ID, slots chan struct{}) error {
	t := time.NewTimer(slotWait)
	defer t.Stop()
	for {
		select {
		case slots <- struct{}{}:
			return nil
		case <-t.C:
			if g.sends.stalled(p, time.Now()) {
				return errPeerNotDraining
			}
			t.Reset(slotWait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errPeerNotDraining is what a send to a peer that does not read its
// replies fails with at once (see sendLimiter).
var errPeerNotDraining = errors.New("fetch: peer does not read what it is sent")

// refusedSender reports whether requests of p are refused: it is
// penalised, or was cut for not reading what it was sent.
func (g *guard) refusedSender(p peer.ID) bool {
	return g.isPenalised(p) || g.sends.refused(p, time.Now())
}

// reprioritise sets the priority of each want in m that order ranked.
func (g *guard) reprioritise(m bsmsg.BitSwapMessage) {
	wl := m.Wantlist()
	if len(wl) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range wl {
		if e.Cancel {
			continue
		}
		if pr, ok := g.prio[e.Cid]; ok && pr != e.Priority {
			m.AddEntry(e.Cid, pr, e.WantType, e.SendDontHave)
		}
	}
}

type orderedSender struct {
	bsnet.MessageSender
	g *guard
	p peer.ID
}

func (s orderedSender) SendMsg(ctx context.Context, m bsmsg.BitSwapMessage) error {
	s.g.keepWanted(m)
	if m.Empty() {
		return nil
	}
	s.g.reprioritise(m)
	s.g.asked(s.p, m)
	return s.g.sendAsking(s.p, m, time.Now(), func() error { return s.MessageSender.SendMsg(ctx, m) })
}

// Cancels of leaves asked again. Bitswap cancels a block at the peers it
// asked when no session wants it any longer, and a fetch that asks a leaf
// again, on a new session (Reader.askAgainLocked) or of a serving holder
// directly (Reader.peerHedgeLocked), ends the old request first: its
// cancel took the leaf out of the holder's queue, or, taken off it
// already, out of what the holder sends (cancels.go), and the leaf, asked
// again, waited at the back of the queue or was not sent at all (the
// direct want, on a stream of its own, came before the cancel that bitswap
// sent up to 20 ms later). In one run of the default demo the apps'
// clients sent 1,497 cancels of leaves their fetches still waited for, and
// the leaves holders then did not send went to the origin. The cancels of
// a leaf the reader waits on, asked again, are kept back: the new
// session's wants reach the holder too, and its cancel, once the block has
// come, ends the want there.

// movedFor is how long after a leaf's request was ended to be asked again
// bitswap's cancels of it are kept back.
const movedFor = 2 * time.Second

// move notes that the peer requests of cs end only to be asked again.
func (g *guard) move(cs ...cid.Cid) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	for c, t := range g.moved {
		if now.Sub(t) > movedFor {
			delete(g.moved, c)
		}
	}
	for _, c := range cs {
		g.moved[c] = now
	}
}

// Cancels owed. A peer sent a want-block holds it until it sends the
// block or hears a cancel, and a holder at its serving cap sends it when it
// gets to it, however late: in the 50-app crowd with every app able to dial
// every other (the demo's -announce-addrs), apps received 2,312 MiB of
// blocks already received, for 2,358 MiB kept; 1,236 MiB of them came from
// peers the guard had reset in bitswap for a late block. Bitswap cancels a
// block at the peers it asked when the block comes, but not at a peer it
// was told is gone (reset, or penalised: it forgets what it asked of it),
// nor a want that was not its own (a direct want kept open for a leaf
// asked again, firstwant.go), and not when the leaf came from the origin
// while its cancels were kept back (keepWanted). So the guard sends its
// own: when a leaf arrives, each peer asked for it (promises.blocked) or
// owed a cancel of it (owe), other than the sender, is sent one. Not
// earlier: until the leaf is in, the peer's copy may still be the first
// (cancelled at the reset and at moves from busy holders, the default
// demo's offload fell from 0.952 to 0.948 over five pairs of runs). A peer
// may hear bitswap's cancel as well; a cancel is a few bytes.

// owe records that p is owed a cancel of c once it arrives.
func (g *guard) owe(p peer.ID, c cid.Cid) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.oweLocked(p, c)
}

// oweLocked is owe for one CID of a wanted leaf. The caller holds mu.
func (g *guard) oweLocked(p peer.ID, c cid.Cid) {
	if _, ok := g.wanted[c]; ok && !slices.Contains(g.owed[c], p) {
		g.owed[c] = append(g.owed[c], p)
	}
}

// oweAskedLocked records that each peer sent a want-block of c, not
// cancelled, is owed a cancel of it: c has come, and what the guard knows
// of it is about to be forgotten. The caller holds mu.
func (g *guard) oweAskedLocked(c cid.Cid) {
	for p := range g.proms.blocked[c] {
		g.oweLocked(p, c)
	}
}

// oweAllLocked records that p is owed a cancel of each leaf it was sent a
// want-block of: bitswap is about to be told it is gone. The caller holds
// mu.
func (g *guard) oweAllLocked(p peer.ID) {
	for _, c := range g.proms.blockedAt(p) {
		g.oweLocked(p, c)
	}
}

// arrived is told that a fetch received leaf c from from (empty: not a
// peer): each peer owed a cancel of c other than from is sent one, and
// bitswap's own cancels of c are no longer kept back (keepWanted).
func (g *guard) arrived(c cid.Cid, from peer.ID) {
	g.mu.Lock()
	g.oweAskedLocked(c)
	ps := g.owed[c]
	delete(g.owed, c)
	delete(g.moved, c)
	g.mu.Unlock()
	for _, p := range ps {
		if p != from {
			g.f.cancelDirect(p, c)
		}
	}
}

// keepWanted takes out of m, a message of bitswap's client, the cancels of
// leaves moved within movedFor that an open fetch wants and has not
// received.
func (g *guard) keepWanted(m bsmsg.BitSwapMessage) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.moved) == 0 {
		return
	}
	now := time.Now()
	for _, e := range m.Wantlist() {
		if !e.Cancel || g.wanted[e.Cid] == 0 {
			continue
		}
		_, got := g.sender[e.Cid]
		if t, ok := g.moved[e.Cid]; ok && !got && now.Sub(t) <= movedFor {
			m.Remove(e.Cid)
		}
	}
}

// sendAsking sends m to p with send, begun at at. p owes an answer to the
// first want in m that asks for one (expectAnswer) from before it goes
// out, so that a disconnect while it is sent, or as soon as it is read,
// takes the debt away with the connection; a want that fails to go out is
// taken back. Config.Asking hears of a want-block in m before it goes.
func (g *guard) sendAsking(p peer.ID, m bsmsg.BitSwapMessage, at time.Time, send func() error) error {
	if ask := g.f.cfg.Asking; ask != nil && asksBlocks(m) {
		ask(p)
	}
	noted := g.expectAnswer(p, m, at)
	err := send()
	if err != nil && noted {
		g.unexpect(p, at)
	}
	return err
}

// asksBlocks reports whether m wants a block sent (a want-block that is
// not a cancel).
func asksBlocks(m bsmsg.BitSwapMessage) bool {
	return slices.ContainsFunc(m.Wantlist(), func(e bsmsg.Entry) bool {
		return !e.Cancel && e.WantType == bspb.Message_Wantlist_Block
	})
}

// asked records the want-blocks of wanted blocks in m, sent to p: promises
// p is to keep (see promises).
func (g *guard) asked(p peer.ID, m bsmsg.BitSwapMessage) {
	wl := m.Wantlist()
	if len(wl) == 0 {
		return
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range wl {
		if _, ok := g.wanted[e.Cid]; !ok {
			continue
		}
		if e.Cancel {
			g.proms.dontHave(p, e.Cid, now)
		} else {
			g.proms.asked(p, e.Cid, e.WantType == bspb.Message_Wantlist_Block, e.SendDontHave, now)
		}
	}
	g.armPromisesLocked()
}

const recentFor = time.Minute

func (g *guard) unwant(cs []cid.Cid) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	for _, c := range cs {
		if g.wanted[c]--; g.wanted[c] <= 0 {
			delete(g.wanted, c)
			delete(g.sender, c)
			delete(g.prio, c)
			delete(g.owed, c)
			g.proms.forget(c)
			g.recent[c] = now
		}
	}
	for c, t := range g.recent {
		if now.Sub(t) > recentFor {
			delete(g.recent, c)
		}
	}
}

// held reports whether a peer has said HAVE of c (and not yet sent it to
// this node): some peer holds it.
func (g *guard) held(c cid.Cid) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.proms.haves[c]) > 0
}

// otherHolder returns the holder of c not yet asked for it that last
// delivered a block (promises.liveHolder), penalised peers left out; ""
// if none.
func (g *guard) otherHolder(c cid.Cid) peer.ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	return g.proms.liveHolder(c, func(p peer.ID) bool { return g.isPenalisedLocked(p, now) })
}

// refusers returns the peers that said DONT_HAVE of c when every peer
// asked for c has answered, one at least with DONT_HAVE, and none's HAVE
// of it stands (promises.refusedOnly); else none.
func (g *guard) refusers(c cid.Cid) []peer.ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.proms.refusedOnly(c) {
		return nil
	}
	return slices.Collect(maps.Keys(g.proms.donts[c]))
}

// deliveries returns how many blocks p delivered to this node, if it
// delivered one since t (else 0, so > 0 says p delivered since t): those
// since it last went a Config.Penalty without delivering.
func (g *guard) deliveries(p peer.ID, t time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if last, ok := g.proms.last[p]; !ok || last.Before(t) {
		return 0
	}
	return g.proms.count[p]
}

// claims reports whether p's HAVE of c stands or p was sent a want-block
// of c, late or not, that it has not refused and this node has not
// cancelled: p holds c, and asked for it again it sends it.
func (g *guard) claims(p peer.ID, c cid.Cid) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.proms.blocked[c][p] || g.proms.haves[c][p]
}

// senderOf returns the peer that first sent the block c.
func (g *guard) senderOf(c cid.Cid) peer.ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sender[c]
}

func (g *guard) isPenalised(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.isPenalisedLocked(p, time.Now())
}

func (g *guard) isPenalisedLocked(p peer.ID, now time.Time) bool {
	until, ok := g.penalised[p]
	if ok && now.After(until) {
		delete(g.penalised, p)
		return false
	}
	return ok
}

// usefulSince reports whether p sent a wanted block or a HAVE for one
// since t.
func (g *guard) usefulSince(p peer.ID, t time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	u, ok := g.useful[p]
	return ok && !u.Before(t)
}

// expectAnswer notes, as of at, the first want in m, about to be sent to
// p, that asks p to answer even if it does not have the block (send
// DONT_HAVE): from then on p owes an answer (see owesAnswer). bitswap's
// broadcast want-haves do not ask it, and a peer without the block rightly
// says nothing to them. It reports whether it noted one (p owed nothing
// before); a want that then fails to go out (a stream that could not be
// opened, a send limiter's refusal) asks nothing: unexpect takes it back.
func (g *guard) expectAnswer(p peer.ID, m bsmsg.BitSwapMessage, at time.Time) bool {
	if !slices.ContainsFunc(m.Wantlist(), func(e bsmsg.Entry) bool { return !e.Cancel && e.SendDontHave }) {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.expect[p]; ok {
		return false
	}
	g.expect[p] = at
	return true
}

// unexpect takes back what expectAnswer noted as of at, if p still owes it.
func (g *guard) unexpect(p peer.ID, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t, ok := g.expect[p]; ok && t.Equal(at) {
		delete(g.expect, p)
	}
}

// owesAnswer reports whether p was asked for an answer at or before t and
// has not answered since.
func (g *guard) owesAnswer(p peer.ID, t time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	at, ok := g.expect[p]
	return ok && !at.After(t)
}

// owedFor is how long p has owed an answer at now (0: it owes none).
func (g *guard) owedFor(p peer.ID, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if at, ok := g.expect[p]; ok {
		return now.Sub(at)
	}
	return 0
}

// answeredSince reports whether p answered since t: a message with a
// block, a HAVE or a DONT_HAVE. A peer that says it does not have
// the content is honest, not silent (a seed asked before its summary
// arrived, a holder that evicted the content).
func (g *guard) answeredSince(p peer.ID, t time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	u, ok := g.answered[p]
	return ok && !u.Before(t)
}

// linkedSince reports whether p is connected now and has not been
// disconnected since t: only such a provider can be silent. One that was
// unreachable or lost its connection may be honest (a seed restarting, a
// network cut) and is not penalised for what it could not send.
func (g *guard) linkedSince(p peer.ID, t time.Time) bool {
	return g.f.cfg.Host.Network().Connectedness(p) == network.Connected && !g.cutSince(p, t)
}

// mayAnswer reports whether p can still answer a want: it is connected
// and not penalised.
func (g *guard) mayAnswer(p peer.ID) bool {
	return g.f.cfg.Host.Network().Connectedness(p) == network.Connected && !g.isPenalised(p)
}

// cutSince reports whether p was disconnected since t.
func (g *guard) cutSince(p peer.ID, t time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	gone, ok := g.gone[p]
	return ok && !gone.Before(t)
}

// pruneLocked forgets the disconnects, blocks and answers of peers older
// than any Reader asks about (a Reader judges its providers StallTimeout
// after its start): on a seed that runs for months each peer ever seen
// stayed in these maps. PeerDisconnected calls it, so they hold at most
// the peers connected lately. The caller holds mu.
func (g *guard) pruneLocked(now time.Time) {
	horizon := recentFor + g.f.cfg.StallTimeout
	for _, m := range []map[peer.ID]time.Time{g.gone, g.useful, g.answered, g.expect} {
		for q, t := range m {
			if now.Sub(t) > horizon {
				delete(m, q)
			}
		}
	}
}

// penalise drops p from bitswap for the penalty time.
func (g *guard) penalise(p peer.ID) bool { return g.penaliseFor(p, g.f.cfg.Penalty) }

// silentPenalty is the longest a provider is ignored for having sent
// nothing: a busy but honest seed can be silent for a while, a liar sends
// bad blocks (Config.Penalty) or breaks its HAVEs.
const silentPenalty = 30 * time.Second

// penaliseFor drops p from bitswap for d, or until its current penalty
// ends if that is later. It reports whether p was not penalised before.
func (g *guard) penaliseFor(p peer.ID, d time.Duration) bool {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return false
	}
	now := time.Now()
	already := g.isPenalisedLocked(p, now)
	until := now.Add(d)
	delete(g.missing, p) // any penalty but a missing block's stands; penaliseMissing notes it again
	if already && g.penalised[p].After(until) {
		g.mu.Unlock()
		return false
	}
	g.penalised[p] = until
	g.oweAllLocked(p)
	restore := make(map[peer.ID][]cid.Cid)
	for _, k := range append(g.proms.penalised(p), g.releaseLocked()...) {
		if _, ok := g.wanted[k.c]; ok {
			restore[k.p] = append(restore[k.p], k.c)
		}
	}
	if t := g.timers[p]; t != nil {
		t.Stop()
	}
	g.timers[p] = time.AfterFunc(d, func() { g.forgive(p) })
	rs := g.receivers
	g.mu.Unlock()
	if already {
		return false
	}
	for _, r := range rs {
		r.PeerDisconnected(p)
	}
	for q, cs := range restore {
		if g.f.cfg.Host.Network().Connectedness(q) == network.Connected {
			have(context.Background(), rs, q, cs)
		}
	}
	return true
}

// forgive ends p's penalty: if it is still connected, bitswap hears of it
// again.
func (g *guard) forgive(p peer.ID) {
	g.life.RLock()
	defer g.life.RUnlock()
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	delete(g.timers, p)
	if until, ok := g.penalised[p]; ok && !time.Now().Before(until) {
		delete(g.penalised, p)
		delete(g.missing, p)
	}
	penalised := g.isPenalisedLocked(p, time.Now())
	rs := g.receivers
	g.mu.Unlock()
	if penalised || g.f.cfg.Host.Network().Connectedness(p) != network.Connected {
		return
	}
	for _, r := range rs {
		r.PeerConnected(p)
	}
}

// stop cancels the penalty timers; the guard forgives no one after it.
func (g *guard) stop() {
	g.life.Lock() // waits for a forgive under way
	defer g.life.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	for _, t := range g.timers {
		t.Stop()
	}
	if g.promTimer != nil {
		g.promTimer.Stop()
	}
}

type guardReceiver struct{ g *guard }

func (r guardReceiver) ReceiveMessage(ctx context.Context, p peer.ID, m bsmsg.BitSwapMessage) {
	g := r.g
	if g.side != nil {
		m = withSideBlocks(g.side, m)
	}
	now := time.Now()
	g.cancels.note(p, m, now)
	g.mu.Lock()
	lifted := false
	if g.isPenalisedLocked(p, now) {
		if lifted = g.liftMissingLocked(p, m); !lifted {
			g.mu.Unlock()
			return
		}
	}
	if len(m.Blocks())+len(m.BlockPresences()) > 0 {
		// An answer, whatever it is about: p is not silent. (Matching it
		// to what was asked raced with the want's registration: a DONT_HAVE
		// to the first want could come before the session wanted the CID.)
		g.answered[p] = now
		delete(g.expect, p)
	}
	bad := g.blocksLocked(p, m, now)
	void, held := g.presencesLocked(p, m, now)
	var released []promiseKey
	if len(m.Blocks())+len(m.DontHaves()) > 0 {
		released = g.releaseLocked()
	}
	g.armPromisesLocked()
	rs := g.receivers
	g.mu.Unlock()
	if lifted {
		g.f.log.Info("penalty lifted: the peer sent a wanted block", "peer", p)
		for _, rv := range rs {
			rv.PeerConnected(p)
		}
	}
	if len(held) > 0 {
		m = withoutPresences(m, held)
	}
	if len(bad) > 0 {
		for _, c := range bad {
			g.f.rejected(&VerifyError{Cid: c, Source: SourcePeer, Peer: p})
		}
		if g.penalise(p) {
			g.f.log.Info("peer penalised", "peer", p, "cid", bad[0], "blocks", len(bad))
			g.f.countPenalty()
			g.f.wakeAll()
		}
		return
	}
	if !g.refusedSender(p) {
		g.f.urgent.note(m, now)  // urgent.go: ahead of the serving cap's queue
		g.f.order.note(p, m)     // serveorder.go: whose request is served next
		m = g.haves.answer(p, m) // haves.go: not behind the blocks in boxo's queue
	}
	g.f.direct.received(g.f, p, m.Blocks()) // firstwant.go: before bitswap, which may not want them yet
	for _, rv := range rs {
		rv.ReceiveMessage(ctx, p, m)
	}
	if len(void) > 0 {
		dontHave(ctx, rs, p, void)
	}
	tellHaves(ctx, rs, released)
}

// blocksLocked records the blocks of m, from p at now: a wanted block
// makes p useful and keeps its promise; it returns the CIDs of blocks
// nobody wanted lately (bad: p sent what it was not asked for). The caller
// holds mu.
func (g *guard) blocksLocked(p peer.ID, m bsmsg.BitSwapMessage, now time.Time) []cid.Cid {
	var bad []cid.Cid
	for _, b := range m.Blocks() {
		c := b.Cid()
		if _, ok := g.wanted[c]; ok {
			if _, seen := g.sender[c]; !seen {
				g.sender[c] = p
			}
			g.useful[p] = now
			g.oweAskedLocked(c)
			g.proms.delivered(p, c, now)
			continue
		}
		if _, ok := g.recent[c]; ok {
			continue
		}
		bad = append(bad, c)
	}
	return bad
}

// presencesLocked records the HAVEs and DONT_HAVEs of m, from p at now,
// in the promise book. It returns the wanted CIDs whose HAVE is void (p's
// promise of it was late) and those whose HAVE is held back from bitswap.
// The caller holds g.mu.
func (g *guard) presencesLocked(p peer.ID, m bsmsg.BitSwapMessage, now time.Time) (void, held []cid.Cid) {
	for _, c := range m.Haves() {
		if _, ok := g.wanted[c]; ok {
			g.useful[p] = now
			switch v, h := g.proms.have(p, c, now); {
			case v:
				void = append(void, c)
			case h:
				held = append(held, c)
			}
		}
	}
	for _, c := range m.DontHaves() {
		if _, ok := g.wanted[c]; ok {
			g.proms.refused(p, c, now)
		} else {
			g.proms.dontHave(p, c, now)
		}
	}
	return void, held
}

// withoutPresences returns a copy of m without the block presences of cs
// (HAVEs held back from bitswap: see promises).
func withoutPresences(m bsmsg.BitSwapMessage, cs []cid.Cid) bsmsg.BitSwapMessage {
	return rebuilt(m, nil, func(bp bsmsg.BlockPresence) bool { return !slices.Contains(cs, bp.Cid) })
}

// withoutAnyPresence returns a copy of m (its want list, blocks and
// pending bytes) without its block presences.
func withoutAnyPresence(m bsmsg.BitSwapMessage) bsmsg.BitSwapMessage {
	return rebuilt(m, nil, func(bsmsg.BlockPresence) bool { return false })
}

// rebuilt returns a copy of m: its want list and pending bytes, the blocks
// block keeps and the block presences presence keeps (nil keeps all).
func rebuilt(m bsmsg.BitSwapMessage, block func(blocks.Block) bool, presence func(bsmsg.BlockPresence) bool) bsmsg.BitSwapMessage {
	out := bsmsg.New(m.Full())
	for _, e := range m.Wantlist() {
		if e.Cancel {
			out.Cancel(e.Cid)
		} else {
			out.AddEntry(e.Cid, e.Priority, e.WantType, e.SendDontHave)
		}
	}
	for _, b := range m.Blocks() {
		if block == nil || block(b) {
			out.AddBlock(b)
		}
	}
	for _, bp := range m.BlockPresences() {
		if presence == nil || presence(bp) {
			out.AddBlockPresence(bp.Cid, bp.Type)
		}
	}
	out.SetPendingBytes(m.PendingBytes())
	return out
}

// releaseLocked returns the held HAVEs bitswap may hear now, of CIDs
// still wanted. The caller holds mu.
func (g *guard) releaseLocked() []promiseKey {
	return slices.DeleteFunc(g.proms.release(), g.unwantedLocked)
}

// unwantedLocked reports whether no open fetch wants k's CID. The caller
// holds mu.
func (g *guard) unwantedLocked(k promiseKey) bool {
	_, ok := g.wanted[k.c]
	return !ok
}

// byPeer groups the CIDs of ks by peer.
func byPeer(ks []promiseKey) map[peer.ID][]cid.Cid {
	by := make(map[peer.ID][]cid.Cid)
	for _, k := range ks {
		by[k.p] = append(by[k.p], k.c)
	}
	return by
}

// tellHaves tells the receivers the HAVEs of ks, by peer.
func tellHaves(ctx context.Context, rs []bsnet.Receiver, ks []promiseKey) {
	for p, cs := range byPeer(ks) {
		have(ctx, rs, p, cs)
	}
}

// dontHave tells the receivers that p does not have cs.
func dontHave(ctx context.Context, rs []bsnet.Receiver, p peer.ID, cs []cid.Cid) {
	tell(ctx, rs, p, cs, bsmsg.BitSwapMessage.AddDontHave)
}

// have tells the receivers that p has cs again: the HAVEs of p that a
// penalised peer had made the guard answer with DONT_HAVE.
func have(ctx context.Context, rs []bsnet.Receiver, p peer.ID, cs []cid.Cid) {
	tell(ctx, rs, p, cs, bsmsg.BitSwapMessage.AddHave)
}

// tell hands the receivers a message from p with one entry per CID of cs,
// made by add.
func tell(ctx context.Context, rs []bsnet.Receiver, p peer.ID, cs []cid.Cid, add func(bsmsg.BitSwapMessage, cid.Cid)) {
	m := bsmsg.New(false)
	for _, c := range cs {
		add(m, c)
	}
	for _, rv := range rs {
		rv.ReceiveMessage(ctx, p, m)
	}
}

// armPromisesLocked sets the promise timer for the earliest promise due.
// The caller holds mu.
func (g *guard) armPromisesLocked() {
	at, ok := g.proms.next()
	if !ok || g.stopped {
		return
	}
	d := max(time.Until(at), time.Millisecond)
	if g.promTimer == nil {
		g.promTimer = time.AfterFunc(d, g.checkPromises)
		return
	}
	g.promTimer.Reset(d)
}

// checkPromises breaks the promises that are due (see promises): bitswap
// hears DONT_HAVE from their peers, and peers that only lie are penalised.
func (g *guard) checkPromises() {
	g.life.RLock()
	defer g.life.RUnlock()
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	now := time.Now()
	excluded := func(q peer.ID) bool { return g.isPenalisedLocked(q, now) }
	moved := g.proms.busy(now, excluded)
	late, liars := g.proms.due(now, excluded)
	late = slices.DeleteFunc(late, g.unwantedLocked)
	var busyKeys, lighter []promiseKey
	for _, m := range moved {
		if !g.unwantedLocked(m.from) {
			busyKeys = append(busyKeys, m.from)
			lighter = append(lighter, promiseKey{m.to, m.from.c})
		}
	}
	for p := range byPeer(late) {
		g.oweAllLocked(p)
	}
	released := g.releaseLocked()
	g.armPromisesLocked()
	rs := g.receivers
	g.mu.Unlock()
	for p, cs := range byPeer(busyKeys) {
		g.f.log.Debug("want-blocks moved from a busy holder", "peer", p, "cid", cs[0], "blocks", len(cs))
		dontHave(context.Background(), rs, p, cs)
	}
	tellHaves(context.Background(), rs, lighter)
	if len(lighter) > 0 {
		g.f.countMoved(len(lighter))
	}
	for p, cs := range byPeer(late) {
		g.f.log.Debug("HAVE not followed by the block in time: peer reset in bitswap", "peer", p, "cid", cs[0], "blocks", len(cs))
		g.reset(rs, p)
	}
	tellHaves(context.Background(), rs, released)
	for _, p := range liars {
		if g.penaliseMissing(p, g.f.cfg.Penalty) {
			g.f.log.Info("peer penalised: HAVEs never followed by blocks", "peer", p)
			g.f.countPenalty()
			g.f.wakeAll()
		}
	}
}

// penaliseMissing penalises p for d for blocks it has not sent: HAVEs not
// followed by blocks in time (a liar, or a holder too busy to keep them),
// or silence (a provider or stripe owner that sent nothing). A wanted
// block from it lifts the penalty (liftMissingLocked). It reports whether
// p was not penalised before.
func (g *guard) penaliseMissing(p peer.ID, d time.Duration) bool {
	if !g.penaliseFor(p, d) {
		return false
	}
	g.mu.Lock()
	if g.isPenalisedLocked(p, time.Now()) {
		g.missing[p] = true
	}
	g.mu.Unlock()
	return true
}

// liftMissingLocked lifts p's penalty if it was penalised only for blocks
// it did not send (penaliseMissing) and m brings a block a fetch wants:
// the peer was busy, not lying. A block's CID is its bytes' hash, so a
// liar cannot send one it does not hold. In a congested crowd an app at
// its serving cap sends each of the peers it said HAVE to a block every
// few seconds, longer than haveDeadline: penalised by most of them for
// Config.Penalty, its late blocks were dropped as they came (its upload
// wasted) and it served no one for the rest of the crowd. A peer's
// penalties are lifted at most maxLifts times per liftWindow: a liar that
// holds some wanted blocks could otherwise send one after each lie and
// never stay penalised; the lifts of at most maxLiftPeers peers are
// counted (roomForLiftLocked). It reports whether it lifted the penalty.
// The caller holds g.mu.
func (g *guard) liftMissingLocked(p peer.ID, m bsmsg.BitSwapMessage) bool {
	if !g.missing[p] || !slices.ContainsFunc(m.Blocks(), func(b blocks.Block) bool {
		_, ok := g.wanted[b.Cid()]
		return ok
	}) {
		return false
	}
	now := time.Now()
	l, known := g.lifts[p]
	if !known && !g.roomForLiftLocked(now) {
		return false
	}
	if now.Sub(l.since) >= liftWindow {
		l = lifts{since: now}
	}
	if l.n >= maxLifts {
		return false
	}
	l.n++
	g.lifts[p] = l
	delete(g.missing, p)
	delete(g.penalised, p)
	if t := g.timers[p]; t != nil {
		t.Stop()
		delete(g.timers, p)
	}
	return true
}

// lifts counts a peer's lifted penalties since since.
type lifts struct {
	since time.Time
	n     int
}

// maxLifts is how many of a peer's penalties for blocks not sent are
// lifted per liftWindow (the default Config.Penalty): a busy holder in a
// crowd is penalised and forgiven a few times in a crowd's minute.
const (
	maxLifts   = 4
	liftWindow = DefaultPenalty
)

// maxLiftPeers bounds the peers whose lifted penalties are counted: past
// it, a penalty of a peer not counted yet is not lifted (it runs out).
const maxLiftPeers = 1024

// roomForLiftLocked reports whether another peer's lifts may be counted:
// the map has room, once full after the counts older than liftWindow are
// forgotten. A stream of new peers, each penalised and then sending a
// wanted block, does not grow the map without bound; it is walked only
// when full. The caller holds g.mu.
func (g *guard) roomForLiftLocked(now time.Time) bool {
	if len(g.lifts) < maxLiftPeers {
		return true
	}
	for p, l := range g.lifts {
		if now.Sub(l.since) >= liftWindow {
			delete(g.lifts, p)
		}
	}
	return len(g.lifts) < maxLiftPeers
}

// reset tells the receivers' clients that p disconnected and, unless it
// is penalised or gone, connected again: bitswap forgets p's HAVEs (which
// it never turns into DONT_HAVE), so its sessions ask another holder of
// what p was asked, and sends p its wants again. The wants stay open at p,
// so a block p sends late is still taken; bitswap's server is not told, so
// what p asked of this node stays asked.
func (g *guard) reset(rs []bsnet.Receiver, p peer.ID) {
	for _, r := range rs {
		clientOf(r).PeerDisconnected(p)
	}
	if !g.mayAnswer(p) {
		return
	}
	for _, r := range rs {
		clientOf(r).PeerConnected(p)
	}
}

// peerEvents is what a bitswap receiver is told of its peers.
type peerEvents interface {
	PeerConnected(peer.ID)
	PeerDisconnected(peer.ID)
}

// clientOf is r's client side when r is boxo's Bitswap (client and server
// in one), else r.
func clientOf(r bsnet.Receiver) peerEvents {
	if b, ok := r.(*bitswap.Bitswap); ok && b.Client != nil {
		return b.Client
	}
	return r
}

func (r guardReceiver) ReceiveError(err error) {
	r.g.mu.Lock()
	rs := r.g.receivers
	r.g.mu.Unlock()
	for _, rv := range rs {
		rv.ReceiveError(err)
	}
}

func (r guardReceiver) PeerConnected(p peer.ID) {
	r.g.sends.reconnected(p, time.Now()) // sendlimit.go: a cut peer back is on probation
	if r.g.isPenalised(p) {
		return
	}
	r.g.mu.Lock()
	rs := r.g.receivers
	r.g.mu.Unlock()
	for _, rv := range rs {
		rv.PeerConnected(p)
	}
}

func (r guardReceiver) PeerDisconnected(p peer.ID) {
	r.g.mu.Lock()
	now := time.Now()
	r.g.gone[p] = now
	delete(r.g.expect, p) // what it was asked went with the connection
	r.g.proms.gone(p)
	r.g.haves.gone(p)
	r.g.cancels.gone(p)
	r.g.f.order.forget(p)
	r.g.pruneLocked(now)
	released := r.g.releaseLocked()
	rs := r.g.receivers
	r.g.mu.Unlock()
	for _, rv := range rs {
		rv.PeerDisconnected(p)
	}
	tellHaves(context.Background(), rs, released)
}
