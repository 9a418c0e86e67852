package mesh

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"

	"github.com/meshcdn/meshcdn/internal/expiry"
)

// Connection and stream limits. go-libp2p's resource manager, scaled to a
// seed's 1 GiB, admits 128 inbound connections while its connection manager
// only trims above MaxConns (1024): 128 idle connections locked every new
// peer out and nothing was ever trimmed. Here both follow MaxConns: the
// connection manager keeps between 3/4 of it and all of it, and the
// resource manager admits a quarter more than that, inbound and in all, so
// that the connection manager always gets to trim (idle peers first) before
// the resource manager refuses anyone. Bitswap's streams are bounded per
// peer (bitswapStreamsPerPeer inbound: boxo opens one for its wants and one
// per message it sends), so a few peers cannot take the protocol's share
// with idle streams (20 peers × 60 did, of 768).
//
// A stream that has not negotiated its protocol yet sits in the resource
// manager's transient scope until go-libp2p's host gives up on it after 10 s
// (basichost.DefaultNegotiationTimeout, which libp2p.New cannot change).
// Scaled to 1 GiB that scope admits 256 inbound streams: 20 peers opening 60
// streams each and never writing on them kept it full, and a new app's
// streams were refused. So a peer holds at most peerStreamsInbound inbound
// streams of any protocol, negotiated or not (unaskedStreamsInbound unless
// this node asked it for blocks: Memory per peer, below), and the transient
// scope admits unaskedStreamsInbound for each of MaxConns/8 peers (3072 on
// a seed, three per MaxConns; two before, which 26 peers holding 80 each
// filled). Filling it takes MaxConns/8 peers (128 on a seed, each a
// connection and a key) holding all they may, where before the per-peer
// limit two connections of one peer did, and it stays full only while they
// keep reopening streams the host resets after 10 s. The system's inbound
// streams have room for that and 4 per connection negotiated. Each
// un-negotiated yamux stream reserves its 256 KiB window from its
// connection's memory, so a full transient scope holds 768 MiB of a seed's
// 1,152 (reserved, not allocated: the window fills only with bytes the peer
// sends).
const (
	// bitswapStreamsPerPeer is the most inbound bitswap streams one peer
	// holds at once. An honest seed sending at full speed holds more than
	// its sends under way (fetch's perPeerSends, 4): boxo's SendMessage
	// returns once a block is in the muxer's window and closes the stream
	// in the background, so the next send opens a new stream while this
	// node has yet to read the end of the last ones. At 16, a loaded app
	// node refused the seed's streams ("cannot reserve inbound stream"),
	// each refusal a block dropped: a 3 s stall until the leaf was asked
	// again, or the fetch failed after StallTimeout (BenchmarkNodeThroughput,
	// thru's notes).
	bitswapStreamsPerPeer = 64
	// peerStreamsInbound is the most inbound streams of any protocol,
	// negotiated or not, one peer that this node asked for blocks (a
	// sender) holds at once: bitswap's 64 and room for identify, ping,
	// the DHT, gossipsub and the mesh's own protocols.
	peerStreamsInbound = 80
	// connGrace is how long a new connection is safe from trimming.
	connGrace = 30 * time.Second
)

// Identify's streams. go-libp2p's service limits (SetDefaultServiceLimits,
// scaled to a seed's 1 GiB) admit 128 inbound identify streams in all,
// requests and pushes together, and 16 of each per peer. go-libp2p reads
// a push for up to 5 s, and a peer that leaves its push streams silent and
// opens them again as they are reset holds them: 8 peers filled the 128,
// and the seed reset every new app's identify request, so the app never
// learnt the seed's protocols and addresses (an audit: 12 peers). A peer
// needs one request and one push at a time per connection, and holds at
// most 8 connections (PeerDefault): it gets identifyPerPeer of each, each
// way. Each kind admits MaxConns streams in all (identifyPerPeer for each
// of MaxConns/8 peers) and the service twice that, so that filling it
// takes MaxConns/8 peers (128 on a seed, 16 on an app) holding all they
// may, each with its own key and connection. A request is answered and
// closed at once; only pushes can be held (each reserving its yamux window,
// 256 KiB, of the node's memory). Each stream reading identify's answer
// reserves signedIDSize of memory for it.
const (
	identifyPerPeer = 8
	signedIDSize    = 8 << 10 // go-libp2p identify's signedIDSize
)

// Memory per peer. Each yamux stream (TCP, WebSockets) reserves its
// initial window, yamuxWindow, of the resource manager's memory when it
// opens, inbound or outbound (a constant of the protocol: go-yamux refuses
// a smaller one), and an inbound stream whose reservation fails closes its
// whole connection. Every peer had peerStreamsInbound inbound streams and
// go-libp2p's scaled memory (192 MiB on a seed, 96 on an app): a peer
// holding idle streams on the protocols it could (bitswap's after one
// message stay 2 min, the DHT's and the relay's 1 min, pushes and pings
// are opened again as they are reset) reserved 20 MiB. 57 such peers
// filled a seed's 1,152 MiB (96 held 1,140 MiB), after which each
// connection that opened a stream was closed, the attackers' and honest
// apps' alike; 96 holding theirs over QUIC (whose streams reserve no
// window) filled its 6,144 inbound streams, as 26 that never negotiated
// filled its 2,048 not negotiated: a new app then learnt nothing from the
// seed. An app's 1,280 inbound streams took 16 peers, its 384 MiB 19, its
// 256 not negotiated 4: its fetch from its seed failed (the figures of
// TestFaultIdleStreamsMemory before the change, and of adding its peers 8
// at a time).
//
// An honest peer holds few streams at once: an app fetching from a seed
// held 3-4 inbound and 3-4 outbound streams at the seed (1.5-1.8 MiB).
// Only a peer sending blocks holds many: a loaded app holds up to
// bitswapStreamsPerPeer of a seed's, with their windows and their growth.
// Bitswap sends no block unasked, so a peer this node has not asked for
// blocks within askedFor holds at most unaskedStreamsInbound inbound
// streams (negotiated or not: 8 connections, each identified and pushed
// to, and the rest) and unaskedPeerMemory (that many windows and 8
// outbound); a peer it asked (fetch's Config.Asking, called before the
// want-block goes out, so before the blocks come) gets a sender's limits:
// peerStreamsInbound and senderPeerMemory, the windows of
// bitswapStreamsPerPeer streams and a block message being read on each
// (fetch's inbound filter reserves each message's size), which leaves
// window growth room while fewer are open (it reserves at priority 128:
// only below half the limit). Filling a seed's memory now takes 144 peers
// never asked, an app's 48 (MaxConns/8 or more, as each other limit).
//
// What this cannot do: bound a peer below the system's memory per
// connection it admits (a seed's 1,152 MiB over 1,280 connections: 0.9
// MiB; an app's 2.4), which an honest peer's few yamux streams already
// exceed, so 144 keys still fill a seed's memory (from four addresses or
// more: the memory of one address's connections is bounded, addrmem.go),
// and a peer that claims content this node fetches is asked, and gets a
// sender's limits until askedFor after the last want-block (bitswap's
// session stops asking a peer that sends nothing, and fetch penalises
// it).
const (
	// yamuxWindow is go-yamux's initial stream window, which each stream
	// reserves as it opens.
	yamuxWindow = 256 << 10
	// unaskedStreamsInbound is the most inbound streams, negotiated or
	// not, a peer not asked for blocks lately holds at once.
	unaskedStreamsInbound = 24
	// unaskedPeerMemory is the memory such a peer's streams reserve in all.
	unaskedPeerMemory = (unaskedStreamsInbound + 8) * yamuxWindow
	// senderPeerMemory is the memory a peer asked for blocks reserves:
	// 80 MiB (go-libp2p's scaled default was 96 on an app, 192 on a seed).
	senderPeerMemory = bitswapStreamsPerPeer * (yamuxWindow + blockMessage)
	// blockMessage is the size of a message of one block (1 MiB leaves).
	blockMessage = 1 << 20
	// askedFor is how long after the last want-block sent to a peer it
	// keeps a sender's limits: blocks asked come well within it.
	askedFor = time.Minute
)

// bitswapProtocols are the protocol IDs boxo's bitswap speaks.
var bitswapProtocols = []protocol.ID{"/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0", "/ipfs/bitswap"}

// resourceLimits returns the resource manager's limits for cfg: go-libp2p's
// defaults scaled to MaxMemory, with the connection, stream and memory
// limits above; a peer's are those of a peer not asked for blocks.
func resourceLimits(cfg Config) rcmgr.ConcreteLimitConfig {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	fds := 512
	if cfg.Role == RoleSeed {
		fds = 4096
	}
	inbound := cfg.MaxConns + cfg.MaxConns/4
	total := inbound + cfg.MaxConns/4
	fds = max(fds, total+256)
	base := limits.Scale(cfg.MaxMemory, fds)
	perPeer := rcmgr.ResourceLimits{StreamsInbound: bitswapStreamsPerPeer}
	scaled := base.ToPartialLimitConfig()
	transientStreams := max(scaled.Transient.StreamsInbound, rcmgr.LimitVal(unaskedStreamsInbound*cfg.MaxConns/8))
	systemStreams := max(scaled.System.StreamsInbound, transientStreams+rcmgr.LimitVal(4*cfg.MaxConns))
	over := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			ConnsInbound:   rcmgr.LimitVal(inbound),
			Conns:          rcmgr.LimitVal(total),
			FD:             rcmgr.LimitVal(fds),
			StreamsInbound: systemStreams,
			Streams:        2 * systemStreams,
		},
		// Connections still in their handshake are transient: as many
		// as the system admits, so that handshakes left to stall (15 s
		// each, go-libp2p's accept timeout) shut no one out before the
		// system's own limit. At a quarter of it, 320 of a seed's,
		// stalled from a few addresses, kept every new app out over TCP
		// and QUIC alike. Each address holds at most handshakesPerAddr
		// of them (handshakes.go).
		Transient: rcmgr.ResourceLimits{
			ConnsInbound:   rcmgr.LimitVal(inbound),
			Conns:          rcmgr.LimitVal(total),
			StreamsInbound: transientStreams,
			Streams:        2 * transientStreams,
		},
		PeerDefault:  rcmgr.ResourceLimits{StreamsInbound: unaskedStreamsInbound, Memory: unaskedPeerMemory},
		ProtocolPeer: map[protocol.ID]rcmgr.ResourceLimits{},
		Protocol:     map[protocol.ID]rcmgr.ResourceLimits{},
	}
	identifyLimits(&over, scaled, cfg.MaxConns)
	for _, p := range bitswapProtocols {
		over.ProtocolPeer[p] = perPeer
		over.Protocol[p] = rcmgr.ResourceLimits{
			StreamsInbound: rcmgr.LimitVal(max(1024, 4*cfg.MaxConns)),
			Streams:        rcmgr.LimitVal(max(2048, 8*cfg.MaxConns)),
		}
	}
	return over.Build(base)
}

// identifyLimits sets identify's stream limits in over for maxConns (see
// identifyPerPeer), raising scaled's totals where they are lower: per peer
// identifyPerPeer requests and as many pushes, each way; per protocol
// identifyPerPeer per 8 of maxConns each way, twice that for the service
// (requests and pushes), with memory for every stream to read an answer.
func identifyLimits(over *rcmgr.PartialLimitConfig, scaled rcmgr.PartialLimitConfig, maxConns int) {
	one := rcmgr.LimitVal(identifyPerPeer * maxConns / 8)
	total := func(was rcmgr.ResourceLimits, each rcmgr.LimitVal) rcmgr.ResourceLimits {
		return rcmgr.ResourceLimits{
			StreamsInbound:  max(was.StreamsInbound, each),
			StreamsOutbound: max(was.StreamsOutbound, each),
			Streams:         max(was.Streams, 2*each),
			Memory:          max(was.Memory, rcmgr.LimitVal64(2*int64(each)*signedIDSize)),
		}
	}
	perPeer := func(each rcmgr.LimitVal) rcmgr.ResourceLimits {
		return rcmgr.ResourceLimits{StreamsInbound: each, StreamsOutbound: each, Streams: 2 * each}
	}
	for _, p := range []protocol.ID{identify.ID, identify.IDPush} {
		over.Protocol[p] = total(scaled.Protocol[p], one)
		over.ProtocolPeer[p] = perPeer(identifyPerPeer)
	}
	over.Service = map[string]rcmgr.ResourceLimits{identify.ServiceName: total(scaled.Service[identify.ServiceName], 2*one)}
	over.ServicePeer = map[string]rcmgr.ResourceLimits{identify.ServiceName: perPeer(2 * identifyPerPeer)}
}

// senderLimits returns the per-peer limits of a peer asked for blocks.
func senderLimits(cfg Config) rcmgr.BaseLimit {
	l := resourceLimits(cfg).ToPartialLimitConfig().PeerDefault
	l.StreamsInbound, l.Memory = peerStreamsInbound, senderPeerMemory
	return l.Build(rcmgr.BaseLimit{})
}

// newLimiter returns the resource manager's limiter for cfg: the limits of
// resourceLimits, and a sender's for the peers asked lately.
func newLimiter(cfg Config, asked *askedPeers) rcmgr.Limiter {
	return &peerLimiter{Limiter: rcmgr.NewFixedLimiter(resourceLimits(cfg)), sender: senderLimits(cfg), asked: asked}
}

// peerLimiter is a limiter whose per-peer limits are a sender's while this
// node has lately asked the peer for blocks, and its own otherwise.
type peerLimiter struct {
	rcmgr.Limiter
	sender rcmgr.Limit
	asked  *askedPeers
}

// GetPeerLimits returns p's limits, which follow asked at each use (the
// resource manager asks once per peer scope, and keeps it while p is
// connected).
func (l *peerLimiter) GetPeerLimits(p peer.ID) rcmgr.Limit {
	return tieredLimit{p: p, unasked: l.Limiter.GetPeerLimits(p), l: l}
}

// tieredLimit is one peer's limits: a sender's or unasked.
type tieredLimit struct {
	p       peer.ID
	unasked rcmgr.Limit
	l       *peerLimiter
}

func (t tieredLimit) now() rcmgr.Limit {
	if t.l.asked.sender(t.p, time.Now()) {
		return t.l.sender
	}
	return t.unasked
}

func (t tieredLimit) GetMemoryLimit() int64                  { return t.now().GetMemoryLimit() }
func (t tieredLimit) GetStreamLimit(d network.Direction) int { return t.now().GetStreamLimit(d) }
func (t tieredLimit) GetStreamTotalLimit() int               { return t.now().GetStreamTotalLimit() }
func (t tieredLimit) GetConnLimit(d network.Direction) int   { return t.now().GetConnLimit(d) }
func (t tieredLimit) GetConnTotalLimit() int                 { return t.now().GetConnTotalLimit() }
func (t tieredLimit) GetFDLimit() int                        { return t.now().GetFDLimit() }

// askedPeers are the peers this node asked for blocks within askedFor
// (fetch's Config.Asking). Safe for concurrent use.
type askedPeers struct{ until expiry.Set[peer.ID] }

func newAskedPeers() *askedPeers { return &askedPeers{} }

// ask records that a want-block is going out to p now.
func (a *askedPeers) ask(p peer.ID) {
	now := time.Now()
	a.until.Add(p, now.Add(askedFor), now)
}

// sender reports whether p was asked for blocks within askedFor of now.
func (a *askedPeers) sender(p peer.ID, now time.Time) bool { return a.until.Has(p, now) }

// limitOptions returns the host's resource and connection managers; the
// resource manager admits the peers in asked as senders.
func limitOptions(cfg Config, asked *askedPeers) ([]libp2p.Option, error) {
	lim := newLimiter(cfg, asked)
	rm, err := rcmgr.NewResourceManager(lim, connLimitOptions(cfg)...)
	if err != nil {
		return nil, fmt.Errorf("mesh: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(cfg.MaxConns*3/4, cfg.MaxConns, connmgr.WithGracePeriod(connGrace))
	if err != nil {
		return nil, fmt.Errorf("mesh: connection manager: %w", err)
	}
	return []libp2p.Option{libp2p.ResourceManager(limitAddrs(rm, handshakesPerAddr(cfg), addrMemory(cfg, lim))), libp2p.ConnectionManager(cm)}, nil
}

// evidence rates what the node knows of p beyond its announcements, for the
// provider table (announce.TableConfig.Evidence): 3 for a peer that
// delivered verified bytes to this node, 2 for a bootstrap peer (a seed),
// 1 for a connected peer, 0 for an unknown key.
func (n *Node) evidence(p peer.ID) int {
	if f := n.served.Load(); f != nil && f.Delivered(p) > 0 {
		return 3
	}
	if n.host.ConnManager().IsProtected(p, bootstrapTag) {
		return 2
	}
	if n.host.Network().Connectedness(p) == network.Connected {
		return 1
	}
	return 0
}
