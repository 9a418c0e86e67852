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
// streams of any protocol, negotiated or not, and the transient scope admits
// two per connection the connection manager keeps (MaxConns). Filling it now
// takes MaxConns/40 peers (26 on a seed, each a connection and a key)
// holding all they may, where before two connections of one peer did (a
// peer could hold 384, a connection 128 with its 32 MiB of yamux windows),
// and it stays full only while they keep reopening streams the host resets
// after 10 s (go-libp2p admits 8 connections per IPv4 address or IPv6 /56:
// 64 connections take 8 of those). The system's inbound streams have room
// for that and 4 per connection negotiated. Each un-negotiated yamux stream
// reserves its 256 KiB window from its connection's memory, so a full
// transient scope holds MaxConns/2 MiB of the system's MaxMemory (512 MiB of
// a seed's 1 GiB; reserved, not allocated: the window fills only with bytes
// the peer sends).
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
	// negotiated or not, one peer holds at once: bitswap's 64 and room for
	// identify, ping, the DHT, gossipsub and the mesh's own protocols.
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

// bitswapProtocols are the protocol IDs boxo's bitswap speaks.
var bitswapProtocols = []protocol.ID{"/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0", "/ipfs/bitswap"}

// resourceLimits returns the resource manager's limits for cfg: go-libp2p's
// defaults scaled to MaxMemory, with the connection and bitswap stream
// limits above.
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
	transientStreams := max(scaled.Transient.StreamsInbound, rcmgr.LimitVal(2*cfg.MaxConns))
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
		// and QUIC alike.
		Transient: rcmgr.ResourceLimits{
			ConnsInbound:   rcmgr.LimitVal(inbound),
			Conns:          rcmgr.LimitVal(total),
			StreamsInbound: transientStreams,
			Streams:        2 * transientStreams,
		},
		PeerDefault:  rcmgr.ResourceLimits{StreamsInbound: peerStreamsInbound},
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

// limitOptions returns the host's resource and connection managers.
func limitOptions(cfg Config) ([]libp2p.Option, error) {
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(resourceLimits(cfg)), connLimitOptions(cfg)...)
	if err != nil {
		return nil, fmt.Errorf("mesh: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(cfg.MaxConns*3/4, cfg.MaxConns, connmgr.WithGracePeriod(connGrace))
	if err != nil {
		return nil, fmt.Errorf("mesh: connection manager: %w", err)
	}
	return []libp2p.Option{libp2p.ResourceManager(rm), libp2p.ConnectionManager(cm)}, nil
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
