package fetch

import (
	"context"
	"math"
	"sync"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bsnet "github.com/ipfs/boxo/bitswap/network"
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
	timers    map[peer.ID]*time.Timer // penalty ends
	prio      map[cid.Cid]int32       // wire priority of a wanted leaf: its urgency
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
		timers:         make(map[peer.ID]*time.Timer),
		prio:           make(map[cid.Cid]int32),
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

// order gives each of cs the wire priority of its urgency: MaxInt32 less
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
		g.prio[c] = math.MaxInt32 - int32(min(max(dist[k], 0), math.MaxInt16))
	}
}

// NewMessageSender wraps bitswap's senders so that want entries go out
// with the priorities order gave.
func (g *guard) NewMessageSender(ctx context.Context, p peer.ID, opts *bsnet.MessageSenderOpts) (bsnet.MessageSender, error) {
	s, err := g.BitSwapNetwork.NewMessageSender(ctx, p, opts)
	if err != nil {
		return nil, err
	}
	return orderedSender{s, g}, nil
}

// SendMessage is NewMessageSender's one-shot form.
func (g *guard) SendMessage(ctx context.Context, p peer.ID, m bsmsg.BitSwapMessage) error {
	g.reprioritise(m)
	return g.BitSwapNetwork.SendMessage(ctx, p, m)
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
}

func (s orderedSender) SendMsg(ctx context.Context, m bsmsg.BitSwapMessage) error {
	s.g.reprioritise(m)
	return s.MessageSender.SendMsg(ctx, m)
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
			g.recent[c] = now
		}
	}
	for c, t := range g.recent {
		if now.Sub(t) > recentFor {
			delete(g.recent, c)
		}
	}
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

// penalise drops p from bitswap for the penalty time.
func (g *guard) penalise(p peer.ID) bool {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return false
	}
	already := g.isPenalisedLocked(p, time.Now())
	g.penalised[p] = time.Now().Add(g.f.cfg.Penalty)
	if t := g.timers[p]; t != nil {
		t.Stop()
	}
	g.timers[p] = time.AfterFunc(g.f.cfg.Penalty, func() { g.forgive(p) })
	rs := g.receivers
	g.mu.Unlock()
	if already {
		return false
	}
	for _, r := range rs {
		r.PeerDisconnected(p)
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
}

type guardReceiver struct{ g *guard }

func (r guardReceiver) ReceiveMessage(ctx context.Context, p peer.ID, m bsmsg.BitSwapMessage) {
	g := r.g
	now := time.Now()
	g.mu.Lock()
	if g.isPenalisedLocked(p, now) {
		g.mu.Unlock()
		return
	}
	var bad []cid.Cid
	for _, b := range m.Blocks() {
		c := b.Cid()
		if _, ok := g.wanted[c]; ok {
			if _, seen := g.sender[c]; !seen {
				g.sender[c] = p
			}
			g.useful[p] = now
			continue
		}
		if _, ok := g.recent[c]; ok {
			continue
		}
		bad = append(bad, c)
	}
	for _, c := range m.Haves() {
		if _, ok := g.wanted[c]; ok {
			g.useful[p] = now
			break
		}
	}
	rs := g.receivers
	g.mu.Unlock()
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
	g.f.direct.received(g.f, p, m.Blocks()) // firstwant.go: before bitswap, which may not want them yet
	for _, rv := range rs {
		rv.ReceiveMessage(ctx, p, m)
	}
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
	rs := r.g.receivers
	r.g.mu.Unlock()
	for _, rv := range rs {
		rv.PeerDisconnected(p)
	}
}
