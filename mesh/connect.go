package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

// Staying connected to the bootstrap peers (the mesh's seeds).
//
// Every bootstrap peer has a keeper: a goroutine that dials the peer when it
// is not connected, waits as Backoff says after a failed dial, and dials
// again at once when a connection that lasted drops. Its connections are protected
// from the connection manager. boxo's peering service does the same job,
// but its policy is fixed (a disconnect waits 5-10 s before the first
// redial; its backoff cannot be read or tested), it logs through go-log's
// global logger, and boxo is unmaintained: the policy here is ours.

// bootstrapTag protects bootstrap connections in the connection manager.
const bootstrapTag = "meshcdn-bootstrap"

// Backoff is the bootstrap redial policy (Config.BootstrapBackoff): after
// the n-th failed dial in a row, wait Min·2^(n-1), capped at Max, times a
// jitter factor drawn from [1-Jitter, 1], so that apps that lost the same
// seed do not redial it in step. When a connection that lasted at least
// Max drops, the peer is redialled at once and the count starts over; a
// connection that dropped sooner counts as one more failed dial. A zero
// Backoff in Config means
// DefaultBootstrapBackoff. A Backoff is a plain value, safe to share.
type Backoff struct {
	// Min is the first wait, Max the longest; 0 < Min <= Max.
	Min, Max time.Duration
	// Jitter is the largest share of a wait cut at random, 0 to 1.
	Jitter float64
}

// Delay returns the wait after failures failed dials in a row (at least 1),
// with u drawn uniformly from [0, 1): a pure function, for tests.
func (b Backoff) Delay(failures int, u float64) time.Duration {
	d := b.Min
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return time.Duration(float64(d) * (1 - b.Jitter*u))
}

// peerState is what the node knows of one bootstrap peer, for Ready.
type peerState int

const (
	stateDialing    peerState = iota // no dial has ended yet
	stateDown                        // the last dial failed
	stateConnected                   // connected, summary not in yet
	stateSummarised                  // connected and its summary is in (or it has none to give)
)

// keeper keeps one bootstrap peer connected. Its fields other than the
// channels are guarded by bootstrap.mu.
type keeper struct {
	ai     peer.AddrInfo
	state  peerState
	kick   chan struct{} // redial now: a disconnect or new addresses
	fresh  atomic.Bool   // the machine's network changed: the backoff starts over
	cancel context.CancelFunc
	done   chan struct{}
}

// bootstrap is the node's bootstrap set and the readiness of its peers.
type bootstrap struct {
	mu      sync.Mutex
	keepers map[peer.ID]*keeper
	addrs   []peer.AddrInfo // the set, as given: AutoRelay's candidates
	changed chan struct{}   // closed and replaced on every change (Ready)
}

func (b *bootstrap) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *bootstrap) setState(p peer.ID, k *keeper, s peerState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keepers[p] != k || k.state == s {
		return
	}
	if s == stateConnected && k.state == stateSummarised {
		return // the summary came first
	}
	k.state = s
	b.notifyLocked()
}

// isBootstrap reports whether p is a bootstrap peer now.
func (n *Node) isBootstrap(p peer.ID) bool {
	n.boot.mu.Lock()
	defer n.boot.mu.Unlock()
	_, ok := n.boot.keepers[p]
	return ok
}

// bootstrapPeers returns the bootstrap set, for AutoRelay's peer source.
func (n *Node) bootstrapPeers() []peer.AddrInfo {
	n.boot.mu.Lock()
	defer n.boot.mu.Unlock()
	return append([]peer.AddrInfo(nil), n.boot.addrs...)
}

// SetBootstrap replaces the bootstrap set with addrs (multiaddrs ending in
// /p2p/ID; a peer may be given at several addresses; the node's own
// addresses are skipped, so a seed can take its site's whole seed list).
// Peers new to the set are dialled at once and kept connected, and asked
// for their summary with other holders; peers that left it are no longer
// redialled nor protected (their connections stay until the connection
// manager trims them); peers whose addresses changed are redialled at the
// new ones if not connected. It does not wait for any dial: Ready and
// WaitPeers do. A bad entry fails the call, changing nothing, with a
// *ConfigError naming it. Config().Bootstrap shows the set given last.
// Safe for concurrent use: concurrent calls apply one after the other.
func (n *Node) SetBootstrap(addrs []string) error {
	if n.closed.Load() {
		return ErrClosed
	}
	ais, err := parseBootstrap("Bootstrap", addrs)
	if err != nil {
		return err
	}
	n.cfgMu.Lock()
	defer n.cfgMu.Unlock()
	n.setBootstrap(ais)
	n.cfg.Bootstrap = append([]string(nil), addrs...)
	return nil
}

func (n *Node) setBootstrap(ais []peer.AddrInfo) {
	// A seed finds itself in its site's seed list: not a peer to keep.
	ais = slices.DeleteFunc(slices.Clone(ais), func(ai peer.AddrInfo) bool { return ai.ID == n.self })
	want := make(map[peer.ID]peer.AddrInfo, len(ais))
	for _, ai := range ais {
		want[ai.ID] = ai
	}
	var stopped []*keeper
	var added []peer.ID
	n.boot.mu.Lock()
	if n.closed.Load() {
		n.boot.mu.Unlock()
		return
	}
	n.boot.addrs = ais
	for id, k := range n.boot.keepers {
		if _, ok := want[id]; !ok {
			delete(n.boot.keepers, id)
			k.cancel()
			stopped = append(stopped, k)
		}
	}
	for id, ai := range want {
		if k, ok := n.boot.keepers[id]; ok {
			if !sameAddrs(k.ai.Addrs, ai.Addrs) {
				k.ai = ai
				kick(k.kick)
			}
			continue
		}
		k := &keeper{ai: ai, kick: make(chan struct{}, 1), done: make(chan struct{})}
		if n.host.Network().Connectedness(id) == network.Connected {
			k.state = stateConnected
		}
		var ctx context.Context
		ctx, k.cancel = context.WithCancel(n.ctx)
		n.boot.keepers[id] = k
		added = append(added, id)
		n.host.ConnManager().Protect(id, bootstrapTag)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer close(k.done)
			n.keep(ctx, k)
		}()
	}
	// A summary that came before a peer joined the set did not ask for
	// other holders: ask again. (Under mu, so that Close, which sets
	// closed under it, waits for no goroutine started after.)
	for _, id := range added {
		n.summaries.forget(id)
	}
	if len(added) > 0 {
		n.askConnected()
	}
	n.boot.notifyLocked()
	n.boot.mu.Unlock()
	for _, k := range stopped {
		<-k.done
		n.host.ConnManager().Unprotect(k.ai.ID, bootstrapTag)
	}
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func sameAddrs(a, b []ma.Multiaddr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// bootstrapDialTimeout bounds one dial of a bootstrap peer.
const bootstrapDialTimeout = 15 * time.Second

// keep runs k's redialer on the node's host.
func (n *Node) keep(ctx context.Context, k *keeper) {
	redialer{
		policy: n.cfg.BootstrapBackoff,
		rand:   rand.Float64,
		target: func() peer.AddrInfo {
			n.boot.mu.Lock()
			defer n.boot.mu.Unlock()
			return k.ai
		},
		connected: func(p peer.ID) bool { return n.host.Network().Connectedness(p) == network.Connected },
		dial:      n.dialBootstrap,
		report: func(p peer.ID, s peerState, err error) {
			if err != nil {
				n.log.Debug("bootstrap dial failed", "peer", p, "err", err)
			}
			n.boot.setState(p, k, s)
		},
		kick:  k.kick,
		fresh: func() bool { return k.fresh.Swap(false) },
	}.run(ctx)
}

// redialer is a keeper's loop, apart from the host so that its timing can
// be tested: dial while not connected, waiting as policy says after each
// failure; then wait for a kick (a disconnect, new addresses) and look
// again. A connection that lasted at least policy.Max is redialled at once
// when it drops, and the backoff starts over; one that dropped sooner
// counts as a failed dial, so a peer that accepts and then drops us at once
// is not redialled in a tight loop, unless fresh says the machine's network
// changed since (netwatch.go): then the count starts over.
type redialer struct {
	policy    Backoff
	rand      func() float64
	target    func() peer.AddrInfo
	connected func(peer.ID) bool
	dial      func(context.Context, peer.AddrInfo) error
	report    func(peer.ID, peerState, error)
	kick      <-chan struct{}
	fresh     func() bool // nil: never
}

func (r redialer) run(ctx context.Context) {
	failures := 0
	var since time.Time // when the connection we know of was made
	for {
		ai := r.target()
		if r.connected(ai.ID) {
			if since.IsZero() {
				since = time.Now()
			}
		} else {
			// Looked at only once the peer is down: a kick taken while
			// still connected (a stale one, the connection's own) used
			// up the change before its connections were closed, and the
			// drop then counted as a failure (a wait of its backoff).
			fresh := r.fresh != nil && r.fresh()
			if fresh {
				failures = 0
			}
			if !since.IsZero() { // it dropped
				if time.Since(since) >= r.policy.Max || fresh {
					failures = 0
				} else if failures++; !sleepOrKick(ctx, r.policy.Delay(failures, r.rand()), r.kick) {
					return
				}
				since = time.Time{}
				continue // look again: it may be back
			}
			err := r.dial(ctx, ai)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				failures++
				r.report(ai.ID, stateDown, err)
				if !sleepOrKick(ctx, r.policy.Delay(failures, r.rand()), r.kick) {
					return
				}
				continue
			}
			since = time.Now()
		}
		r.report(ai.ID, stateConnected, nil)
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
	}
}

// dialBootstrap dials ai once. The swarm's own dial backoff would refuse
// redials of a peer that just failed (5 s and up): ours decides, so it is
// cleared first.
func (n *Node) dialBootstrap(ctx context.Context, ai peer.AddrInfo) error {
	if sw, ok := n.host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(ai.ID)
	}
	ctx, cancel := context.WithTimeout(ctx, bootstrapDialTimeout)
	defer cancel()
	return n.host.Connect(network.WithForceDirectDial(ctx, "bootstrap"), ai)
}

// sleepOrKick waits d, or until a kick; false if ctx ended.
func sleepOrKick(ctx context.Context, d time.Duration, kick <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-kick:
	}
	return true
}

// watchConnections kicks a bootstrap peer's keeper when the peer
// disconnects, and forgets the summary of every peer that disconnects.
func (n *Node) watchConnections(sub event.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			ev := e.(event.EvtPeerConnectednessChanged)
			up := ev.Connectedness == network.Connected
			if !up {
				n.summaries.forget(ev.Peer)
			}
			n.boot.mu.Lock()
			if k, ok := n.boot.keepers[ev.Peer]; ok {
				if !up && k.state != stateDown {
					k.state = stateDialing
					n.boot.notifyLocked()
				}
				kick(k.kick) // down: redial now; up: it sees it is connected
			}
			n.boot.mu.Unlock()
		}
	}
}

// parsePeer parses one multiaddr ending in /p2p/ID.
func parsePeer(s string) (peer.AddrInfo, error) {
	m, err := ma.NewMultiaddr(s)
	if err != nil {
		return peer.AddrInfo{}, err
	}
	ai, err := peer.AddrInfoFromP2pAddr(m)
	if err != nil {
		if errors.Is(err, peer.ErrInvalidAddr) {
			return peer.AddrInfo{}, errors.New("does not end in /p2p/<peer ID>")
		}
		return peer.AddrInfo{}, err
	}
	return *ai, nil
}

// parseBootstrap parses a list of peer addresses, merging the addresses of
// a peer given more than once; a bad entry is a *ConfigError for
// field[i].
func parseBootstrap(field string, addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	index := map[peer.ID]int{}
	for i, s := range addrs {
		ai, err := parsePeer(s)
		if err != nil {
			return nil, configErr(fmt.Sprintf("%s[%d]", field, i), s, err.Error())
		}
		if j, ok := index[ai.ID]; ok {
			out[j].Addrs = append(out[j].Addrs, ai.Addrs...)
			continue
		}
		index[ai.ID] = len(out)
		out = append(out, ai)
	}
	return out, nil
}
