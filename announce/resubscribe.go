package announce

import (
	"context"
	"strings"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Pubsub state lost while connected. go-libp2p-pubsub (v0.19) keeps one
// writer stream to each connected peer and learns a peer's topics only
// from what the peer sends at the start of its writer stream. It loses
// that state in ways that last as long as the connection:
//   - its own writer to the peer dies while the connection stays up (a
//     stream reset, one of two duplicate connections closing, the 30 s
//     write deadline on a peer that reads slowly): it forgets the peer's
//     topics and opens a new writer, which sends this node's topics but
//     asks for none (reproduced: TestResubscribeAfterWriterReset);
//   - it restarts a dying writer at most 4 times within 10 minutes and
//     then gives up on the peer while connected (reproduced:
//     TestRedialWhenPeerGaveUp);
//   - the cleanup of a closed inbound stream can run after the peer's new
//     stream has delivered its topics (a quick reconnect; read in its
//     comm.go, where the stream leaves the inbound map before its close is
//     queued).
//
// Nothing one side publishes then reaches the other while they stay
// connected, and pubsub never notices.
//
// The Announcer repairs it from its side. A peer is looked at repairGrace
// after it leaves the topic while still connected and connectGrace after
// it connects. A peer that runs pubsub (identify lists a pubsub protocol)
// but lacks a pubsub stream in either direction over a connection that is
// not limited, at two looks connectGrace apart, has a pubsub that gave up:
// the node that dialled it closes the connections and, redialPause later,
// dials it again, which gives both pubsubs a fresh start (at most
// maxRedials times in redialWindow, not within redialEvery of the last).
// A peer with both streams that left the topic has its pubsub streams
// reset: both pubsubs open new writers, each starting with its topics, and
// each learns the other's again (at most twice per resetEvery; a peer that
// really left the topic, its Announcer closed and its host still up, says
// so in its new stream and is left alone). A peer that runs pubsub and was
// never on the topic (a Kubo node, another mesh's node) is not reset.

const (
	// repairGrace is how long a peer that left the topic while connected
	// gets to come back on its own before it is repaired; a reset is
	// looked at again twice as long after it (pubsub restarts a writer
	// after a backoff of up to a second).
	repairGrace = time.Second
	// connectGrace is how long after a peer connects its pubsub streams
	// are looked at: both pubsubs open their writers at once, after
	// identify.
	connectGrace = 3 * time.Second
	// resetEvery is the window of resetBudget.
	resetEvery = time.Minute
	// maxRedials redials of one peer at most within redialWindow, none
	// within redialEvery of the last (redialBudget).
	maxRedials   = 3
	redialWindow = 10 * time.Minute
	redialEvery  = 5 * time.Second
	// redialPause is how long a redial waits between closing the
	// connections and dialling again, so that both pubsubs handle the
	// disconnect while the peer is not connected; redialTimeout bounds the
	// dial.
	redialPause   = time.Second
	redialTimeout = 10 * time.Second
)

// pubsubProtocols are the protocol ID prefixes of the streams a repair
// counts and resets: gossipsub's, floodsub's and randomsub's. A PubSub
// given custom protocol IDs (pubsub.WithGossipSubProtocols) is not
// repaired.
var pubsubProtocols = []string{"/meshsub/", "/floodsub/", "/randomsub/"}

// repairs is what the Announcer knows of peers to look at and of the
// repairs made. It is safe for concurrent use.
type repairs struct {
	mu      sync.Mutex
	due     map[peer.ID]look        // to be looked at
	missing map[peer.ID]time.Time   // found lacking a pubsub stream, at
	resets  map[peer.ID][]time.Time // resets within resetEvery, oldest first
	redials map[peer.ID][]time.Time // redials within redialWindow, oldest first
	sig     chan struct{}
}

func newRepairs() *repairs {
	return &repairs{
		due:     make(map[peer.ID]look),
		missing: make(map[peer.ID]time.Time),
		resets:  make(map[peer.ID][]time.Time),
		redials: make(map[peer.ID][]time.Time),
		sig:     make(chan struct{}, 1),
	}
}

// look is a peer to be looked at: from when, and whether it left the
// topic while connected (only such a peer is reset: one that runs pubsub
// and was never on the topic, a Kubo node or another mesh's, is not).
type look struct {
	p    peer.ID
	at   time.Time
	left bool
}

// lookAt has p looked at at t, noting whether it left the topic. At most
// maxWatched peers wait at once.
func (r *repairs) lookAt(p peer.ID, t time.Time, left bool) {
	r.mu.Lock()
	if old, had := r.due[p]; had || len(r.due) < maxWatched {
		r.due[p] = look{p: p, at: t, left: left || had && old.left}
	}
	r.mu.Unlock()
	signal(r.sig)
}

// take returns the looks due by now, forgetting them, and when the next
// one is (zero: none waits).
func (r *repairs) take(now time.Time) (ls []look, next time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, l := range r.due {
		switch {
		case !now.Before(l.at):
			delete(r.due, p)
			ls = append(ls, l)
		case next.IsZero() || l.at.Before(next):
			next = l.at
		}
	}
	return ls, next
}

// next returns when the first peer waiting is due (zero: none).
func (r *repairs) next() (next time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.due {
		if next.IsZero() || l.at.Before(next) {
			next = l.at
		}
	}
	return next
}

// strike notes that p lacks a pubsub stream at now and reports whether it
// did at the look before too (within 2 × connectGrace); if not, p is
// looked at again connectGrace later (left: it left the topic). A stream still being set up, on a
// loaded machine, is not taken for one that is missing.
func (r *repairs) strike(p peer.ID, now time.Time, left bool) bool {
	r.mu.Lock()
	at, ok := r.missing[p]
	if ok && now.Sub(at) <= 2*connectGrace {
		delete(r.missing, p)
		r.mu.Unlock()
		return true
	}
	if makeRoom(r.missing, func(at time.Time) bool { return now.Sub(at) > 2*connectGrace }) {
		r.missing[p] = now
	}
	r.mu.Unlock()
	r.lookAt(p, now.Add(connectGrace), left)
	return false
}

// clear forgets that p lacked a pubsub stream.
func (r *repairs) clear(p peer.ID) {
	r.mu.Lock()
	delete(r.missing, p)
	r.mu.Unlock()
}

// makeRoom deletes the entries of m that stale reports once m holds
// maxWatched peers, and reports whether m has room for one more.
func makeRoom[V any](m map[peer.ID]V, stale func(V) bool) bool {
	if len(m) >= maxWatched {
		for q, v := range m {
			if stale(v) {
				delete(m, q)
			}
		}
	}
	return len(m) < maxWatched
}

// budget is how often one kind of repair may be made of one peer: at
// most max within window, none within every of the last.
type budget struct {
	max           int
	window, every time.Duration
}

var (
	// resetBudget: a reset costs each side one of pubsub's writer
	// restarts, of which it allows 4 per peer within 10 minutes. A second
	// reset soon after the first is for the race a reset can lose: a side
	// whose writer the reset killed forgets the other's topics when it
	// handles that death, and if the other's new stream came first its
	// topics are forgotten again.
	resetBudget = budget{max: 2, window: resetEvery, every: 2 * repairGrace}
	// redialBudget: a peer whose pubsub never opens a stream to this node
	// (its resource limits, a blocklist) is not redialled for ever.
	redialBudget = budget{max: maxRedials, window: redialWindow, every: redialEvery}
)

// allowWithin reports whether p may be repaired at now within b, given the
// repairs made (by peer, oldest first), and if so notes it there. If not
// only because the last was within every, it says when p may be (zero
// otherwise).
func allowWithin(made map[peer.ID][]time.Time, b budget, p peer.ID, now time.Time) (bool, time.Time) {
	ts := made[p]
	for len(ts) > 0 && now.Sub(ts[0]) >= b.window {
		ts = ts[1:]
	}
	made[p] = ts
	if len(ts) >= b.max {
		return false, time.Time{}
	}
	if len(ts) > 0 && now.Sub(ts[len(ts)-1]) < b.every {
		return false, ts[len(ts)-1].Add(b.every)
	}
	stale := func(qs []time.Time) bool { return len(qs) == 0 || now.Sub(qs[len(qs)-1]) >= b.window }
	if len(ts) == 0 && !makeRoom(made, stale) {
		return false, time.Time{}
	}
	made[p] = append(ts, now)
	return true, time.Time{}
}

// allowReset reports whether p may be reset at now (resetBudget), and if
// so notes it; if not yet, when it may be.
func (r *repairs) allowReset(p peer.ID, now time.Time) (bool, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return allowWithin(r.resets, resetBudget, p, now)
}

// allowRedial reports whether p may be redialled at now (redialBudget),
// and if so notes it.
func (r *repairs) allowRedial(p peer.ID, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok, _ := allowWithin(r.redials, redialBudget, p, now)
	return ok
}

// noteLeave is joinLoop's part: p left the topic; if it is still
// connected, repairLoop looks at it after repairGrace.
func (a *Announcer) noteLeave(p peer.ID) {
	if a.host.Network().Connectedness(p) != network.Connected {
		return
	}
	a.repairs.lookAt(p, time.Now().Add(repairGrace), true)
}

// repairLoop looks at the peers noteLeave and the connection notifiee hand
// it once they are due.
func (a *Announcer) repairLoop() {
	defer a.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.repairs.sig:
		case <-t.C:
		}
		if next := a.repairDue(time.Now()); !next.IsZero() {
			t.Reset(time.Until(next))
		}
	}
}

// repairDue looks at each peer due by now that is still connected
// (repair). It returns when the next peer is due (zero: none).
func (a *Announcer) repairDue(now time.Time) time.Time {
	ls, next := a.repairs.take(now)
	if len(ls) == 0 {
		return next
	}
	on := make(map[peer.ID]struct{})
	for _, p := range a.topic.ListPeers() {
		on[p] = struct{}{}
	}
	for _, l := range ls {
		if a.host.Network().Connectedness(l.p) == network.Connected {
			_, onTopic := on[l.p]
			a.repair(l, onTopic, now)
		}
		if hook := a.lookHook.Load(); hook != nil {
			(*hook)(l.p)
		}
	}
	return a.repairs.next()
}

// repair repairs l's peer, connected, if its pubsub state is lost (see the
// top of this file): a redial if a pubsub stream is missing, else a reset
// if it left the topic and is still off it.
func (a *Announcer) repair(l look, onTopic bool, now time.Time) {
	p := l.p
	st := pubsubStreams(a.host, p)
	if st.full && (st.in == 0 || st.out == 0) && (st.in > 0 || a.runsPubSub(p)) {
		if a.repairs.strike(p, now, l.left) {
			a.redialIfAllowed(p, st, now)
		}
		return
	}
	a.repairs.clear(p)
	if !l.left || onTopic || st.in == 0 || st.out == 0 {
		return
	}
	if ok, at := a.repairs.allowReset(p, now); !ok {
		a.log.Debug("peer off the topic while connected, reset lately", "peer", p)
		if !at.IsZero() {
			a.repairs.lookAt(p, at, true)
		}
		return
	}
	a.n.resubscribes.Add(1) // before: the repair's effect can be seen at once
	n := resetPubSubStreams(a.host, p)
	a.log.Info("peer off the topic while connected: pubsub streams reset", "peer", p, "streams", n)
	a.repairs.lookAt(p, now.Add(2*repairGrace), true)
}

// redialIfAllowed redials p, which lacks a pubsub stream, if this node
// dialled it (one that dialled this node, a browser or an app behind NAT,
// may not be dialable, and looks at the same streams from its side) and
// allowRedial allows it.
func (a *Announcer) redialIfAllowed(p peer.ID, st streamCount, now time.Time) {
	switch {
	case !st.dialled:
		a.log.Debug("pubsub stream missing, peer not dialled by this node", "peer", p, "in", st.in, "out", st.out)
	case !a.repairs.allowRedial(p, now):
		a.log.Debug("pubsub stream missing, redialled lately", "peer", p, "in", st.in, "out", st.out)
	default:
		a.n.redials.Add(1)
		a.log.Info("pubsub stream missing: redialling", "peer", p, "in", st.in, "out", st.out)
		a.wg.Add(1)
		go a.redial(p)
	}
}

// runsPubSub reports whether p's identify lists a pubsub protocol.
func (a *Announcer) runsPubSub(p peer.ID) bool {
	ps, err := a.host.Peerstore().SupportsProtocols(p, pubsub.GossipSubDefaultProtocols...)
	return err == nil && len(ps) > 0
}

// redial closes the connections to p and, redialPause later, dials it
// again at the addresses the peerstore has for it. A pubsub that handles
// the disconnect once the new connection is up takes the peer for still
// connected and restarts its old writer instead, which it may not do any
// more, and then has none. The new connection is looked at connectGrace
// after it comes up, like any.
func (a *Announcer) redial(p peer.ID) {
	defer a.wg.Done()
	ai := a.host.Peerstore().PeerInfo(p)
	_ = a.host.Network().ClosePeer(p)
	select {
	case <-a.ctx.Done():
		return
	case <-time.After(redialPause):
	}
	ctx, cancel := context.WithTimeout(a.ctx, redialTimeout)
	defer cancel()
	if err := a.host.Connect(ctx, ai); err != nil {
		a.log.Info("redial of a peer whose pubsub stream was missing", "peer", p, "err", err)
	}
}

// streamCount is what repair needs of the connections to a peer: its
// pubsub streams in (opened by the peer: its writer) and out (this
// node's), whether one connection is not limited (pubsub opens streams
// only over those), and whether this node dialled one.
type streamCount struct {
	in, out       int
	full, dialled bool
}

// pubsubStreams counts the pubsub streams between h and p.
func pubsubStreams(h host.Host, p peer.ID) (st streamCount) {
	for _, c := range h.Network().ConnsToPeer(p) {
		cs := c.Stat()
		st.full = st.full || !cs.Limited
		st.dialled = st.dialled || cs.Direction == network.DirOutbound
		for _, s := range pubsubStreamsOf(c) {
			if s.Stat().Direction == network.DirInbound {
				st.in++
			} else {
				st.out++
			}
		}
	}
	return st
}

// resetPubSubStreams resets every pubsub stream between h and p, and
// reports how many there were.
func resetPubSubStreams(h host.Host, p peer.ID) int {
	n := 0
	for _, c := range h.Network().ConnsToPeer(p) {
		for _, s := range pubsubStreamsOf(c) {
			_ = s.Reset()
			n++
		}
	}
	return n
}

// pubsubStreamsOf returns the pubsub streams open on c.
func pubsubStreamsOf(c network.Conn) []network.Stream {
	var out []network.Stream
	for _, s := range c.GetStreams() {
		if isPubSub(s.Protocol()) {
			out = append(out, s)
		}
	}
	return out
}

// isPubSub reports whether id is a pubsub router's protocol.
func isPubSub(id protocol.ID) bool {
	for _, pre := range pubsubProtocols {
		if strings.HasPrefix(string(id), pre) {
			return true
		}
	}
	return false
}
