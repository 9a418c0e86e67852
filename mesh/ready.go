package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/meshcdn/meshcdn/announce"
)

// Learning what a newly connected peer holds.
//
// When identify completes on a connection to a peer that speaks the mesh's
// summary protocol (announce.SummaryProtocol), the node asks it for its
// summary, once per time connected, and adds the answer to the provider
// table for the answer's TTL. A bootstrap peer (a seed) is also asked for
// the other holders it knows of, and the node believes those too (their
// addresses go to the peerstore): it trusts its seeds as it trusts its
// configuration. Answers of other peers speak for themselves only.

// ErrNoBootstrapPeer is returned (wrapped) by Ready when every bootstrap
// peer's dial failed: the node goes on redialling them, and fetches go to
// the origin meanwhile.
var ErrNoBootstrapPeer = errors.New("mesh: no bootstrap peer reachable")

// summaryAskers bounds the summary requests under way at once.
const summaryAskers = 8

// summaries tracks whom the node has asked since they connected.
type summaries struct {
	mu    sync.Mutex
	asked map[peer.ID]struct{}
	slots chan struct{}
}

func newSummaries() *summaries {
	return &summaries{asked: make(map[peer.ID]struct{}), slots: make(chan struct{}, summaryAskers)}
}

// forget lets p be asked again (it disconnected, or joined the bootstrap
// set).
func (s *summaries) forget(p peer.ID) {
	s.mu.Lock()
	delete(s.asked, p)
	s.mu.Unlock()
}

// claim reports whether p is to be asked now (not asked since it connected).
func (s *summaries) claim(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.asked[p]; ok {
		return false
	}
	s.asked[p] = struct{}{}
	return true
}

// watchIdentify asks every newly identified peer for its summary. A
// bootstrap peer whose identify failed is asked all the same: a seed
// speaks the protocol, and go-libp2p does not identify a connection twice,
// so Ready would otherwise wait on it for as long as it stays connected (a
// seed whose identify streams a few peers held open reset every new app's
// identify, and the apps' Ready hung past the attack's end).
func (n *Node) watchIdentify(sub event.Subscription) {
	defer sub.Close()
	proto := n.sumSvc.Protocol()
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			switch ev := e.(type) {
			case event.EvtPeerIdentificationCompleted:
				if slices.Contains(ev.Protocols, proto) {
					n.ask(ev.Peer)
				} else {
					n.summarised(ev.Peer) // nothing to learn: it does not answer
				}
			case event.EvtPeerIdentificationFailed:
				n.log.Debug("identify failed", "peer", ev.Peer, "err", ev.Reason)
				if n.isBootstrap(ev.Peer) && n.host.Network().Connectedness(ev.Peer) == network.Connected {
					n.ask(ev.Peer)
				}
			}
		}
	}
}

// askConnected asks every connected peer that speaks the summary protocol
// and has not been asked since it connected.
func (n *Node) askConnected() {
	proto := n.sumSvc.Protocol()
	for _, p := range n.host.Network().Peers() {
		if ok, _ := n.host.Peerstore().SupportsProtocols(p, proto); len(ok) > 0 {
			n.ask(p)
		}
	}
}

// ask requests p's summary in the background, unless it was asked since it
// connected.
func (n *Node) ask(p peer.ID) {
	if n.closed.Load() || !n.summaries.claim(p) {
		return
	}
	n.spawn(func() {
		select {
		case n.summaries.slots <- struct{}{}:
			defer func() { <-n.summaries.slots }()
		case <-n.ctx.Done():
			return
		}
		seed := n.isBootstrap(p)
		sum, err := n.sumSvc.Request(n.ctx, p, announce.SummaryRequest{Others: seed})
		if err != nil {
			n.log.Debug("summary request failed", "peer", p, "err", err)
		} else {
			n.learn(p, seed, sum)
		}
		// Failed or not, Ready waits no longer on p: its gossip will tell.
		n.summarised(p)
	})
}

// learn adds what p's summary says to the provider table: the other
// holders only from a bootstrap peer (seed), then p's own roots.
func (n *Node) learn(p peer.ID, seed bool, sum announce.Summary) {
	t := n.ann.Table()
	self := n.host.ID()
	for _, h := range sum.Others {
		if !seed || h.Peer == self || h.Peer == p {
			continue
		}
		if len(h.Addrs) > 0 {
			n.host.Peerstore().AddAddrs(h.Peer, h.Addrs, sum.TTL)
		}
		t.Add(h.Peer, sum.TTL, h.Roots...)
	}
	t.Add(p, sum.TTL, sum.Own...)
	n.log.Debug("summary received", "peer", p, "roots", len(sum.Own), "holders", len(sum.Others), "seed", seed)
}

// summarised records that p's summary is in, for Ready.
func (n *Node) summarised(p peer.ID) {
	n.boot.mu.Lock()
	k := n.boot.keepers[p]
	n.boot.mu.Unlock()
	if k != nil && n.host.Network().Connectedness(p) == network.Connected {
		n.boot.setState(p, k, stateSummarised)
	}
}

// Ready waits until the node knows what its bootstrap peers hold: each
// bootstrap peer is connected and has answered its summary request (or
// does not speak the protocol, or its request failed), or its latest dial
// failed. It returns nil once no bootstrap peer is still being dialled or
// asked and at least one has answered, at once when there are no bootstrap
// peers, and an error wrapping ErrNoBootstrapPeer when every one failed to
// dial (the node keeps redialling them; call Ready again later). A fetch
// made after Ready returns nil uses what the seeds hold at once. A dial can
// take up to 15 s (a peer that does not answer): bound the wait with ctx.
//
// A fetch made before Ready returns is not lost either: a connected
// bootstrap peer whose summary is not in yet is offered to it as a
// provider, so it races that peer for Config.PeerTimeout before the
// origin. Safe for concurrent use.
func (n *Node) Ready(ctx context.Context) error {
	for {
		if n.closed.Load() {
			return ErrClosed
		}
		n.boot.mu.Lock()
		var waiting, ready, down int
		for id, k := range n.boot.keepers {
			switch {
			case k.state == stateSummarised:
				ready++
			case k.state == stateDown && n.host.Network().Connectedness(id) != network.Connected:
				down++
			default: // being dialled or asked (or just reconnected: its keeper will tell)
				waiting++
			}
		}
		changed := n.boot.changed
		n.boot.mu.Unlock()
		switch {
		case waiting == 0 && (ready > 0 || down == 0):
			return nil
		case waiting == 0:
			return fmt.Errorf("mesh: ready: %d bootstrap peers: %w", down, ErrNoBootstrapPeer)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("mesh: ready (%d of %d bootstrap peers ready): %w", ready, ready+down+waiting, ctx.Err())
		case <-n.ctx.Done():
			return ErrClosed
		}
	}
}

// pendingSeeds lists the connected bootstrap peers whose summary is not in.
func (n *Node) pendingSeeds() []peer.ID {
	n.boot.mu.Lock()
	defer n.boot.mu.Unlock()
	var out []peer.ID
	for id, k := range n.boot.keepers {
		if k.state != stateSummarised && n.host.Network().Connectedness(id) == network.Connected {
			out = append(out, id)
		}
	}
	return out
}

// providers is the fetcher's provider finder: the provider table, and
// before them the connected bootstrap peers whose summary is not in yet
// (they may hold the content; the fetch races them for the peer timeout
// instead of going to the origin at once).
type providers struct {
	n     *Node
	table *announce.Table
}

var _ routing.ContentDiscovery = providers{}

// FindProvidersAsync implements routing.ContentDiscovery.
func (f providers) FindProvidersAsync(ctx context.Context, root cid.Cid, count int) <-chan peer.AddrInfo {
	pending := f.n.pendingSeeds()
	if count > 0 && len(pending) > count {
		pending = pending[:count]
	}
	src := f.table.FindProvidersAsync(ctx, root, count)
	if len(pending) == 0 {
		return src
	}
	ch := make(chan peer.AddrInfo, len(pending))
	for _, p := range pending {
		ch <- peer.AddrInfo{ID: p, Addrs: f.n.host.Peerstore().Addrs(p)}
	}
	merge := func() {
		defer close(ch)
		sent := len(pending)
		for ai := range src {
			if slices.Contains(pending, ai.ID) || (count > 0 && sent >= count) {
				continue
			}
			select {
			case ch <- ai:
				sent++
			case <-ctx.Done():
				for range src { // the table closes it when ctx ends
				}
				return
			}
		}
	}
	if !f.n.spawn(merge) {
		return src // closing: the table's answer alone
	}
	return ch
}
