package mesh

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// TestResourceLimitsFollowMaxConns: for each role the resource manager
// admits more inbound connections than the connection manager's high
// watermark (MaxConns), so that the connection manager gets to trim before
// anyone is refused, and a peer holds at most bitswapStreamsPerPeer inbound
// bitswap streams while the protocol as a whole has room for many peers. A
// peer holds at most unaskedStreamsInbound inbound streams, negotiated or
// not, and unaskedPeerMemory, unless asked for blocks (senderLimits), and
// the transient scope (streams still negotiating) has room for as many for
// MaxConns/8 peers, so it takes that many peers' idle streams to fill it.
func TestResourceLimitsFollowMaxConns(t *testing.T) {
	for _, role := range []Role{RoleApp, RoleSeed} {
		cfg := Config{Role: role, Name: "x", InMemory: true}.withDefaults()
		l := resourceLimits(cfg).ToPartialLimitConfig()
		if in := int(l.System.ConnsInbound); in <= cfg.MaxConns {
			t.Errorf("%s: system ConnsInbound = %d, want more than MaxConns %d", role, in, cfg.MaxConns)
		}
		if all := int(l.System.Conns); all <= int(l.System.ConnsInbound) {
			t.Errorf("%s: system Conns = %d, want more than ConnsInbound %d", role, all, l.System.ConnsInbound)
		}
		if fd := int(l.System.FD); fd < int(l.System.Conns) {
			t.Errorf("%s: system FD = %d, want at least Conns %d", role, fd, l.System.Conns)
		}
		if n, sys := l.Transient.ConnsInbound, l.System.ConnsInbound; n != sys || l.Transient.Conns != l.System.Conns {
			t.Errorf("%s: transient connections %d inbound, %d in all; want the system's %d and %d (handshakes)", role, n, l.Transient.Conns, sys, l.System.Conns)
		}
		if n, m := int(l.PeerDefault.StreamsInbound), int64(l.PeerDefault.Memory); n != unaskedStreamsInbound || m != unaskedPeerMemory {
			t.Errorf("%s: per peer %d inbound streams, %d bytes; want %d and %d", role, n, m, unaskedStreamsInbound, unaskedPeerMemory)
		}
		if s := senderLimits(cfg); s.StreamsInbound != peerStreamsInbound || s.Memory != senderPeerMemory || s.StreamsOutbound != int(l.PeerDefault.StreamsOutbound) {
			t.Errorf("%s: a sender's limits = %+v, want %d inbound streams, %d bytes, the rest as a peer's", role, s, peerStreamsInbound, senderPeerMemory)
		}
		if n := int(l.Transient.StreamsInbound); n < unaskedStreamsInbound*cfg.MaxConns/8 {
			t.Errorf("%s: transient inbound streams = %d, want room for MaxConns/8 peers' %d (%d)", role, n, unaskedStreamsInbound, unaskedStreamsInbound*cfg.MaxConns/8)
		}
		if peers := int64(l.System.Memory) / unaskedPeerMemory; peers < int64(cfg.MaxConns/8) {
			t.Errorf("%s: system memory holds %d peers' %d bytes, want at least MaxConns/8 (%d)", role, peers, unaskedPeerMemory, cfg.MaxConns/8)
		}
		if n, tr := int(l.System.StreamsInbound), int(l.Transient.StreamsInbound); n < tr+4*cfg.MaxConns {
			t.Errorf("%s: system inbound streams = %d, want room for the transient %d and 4 per connection (%d)", role, n, tr, tr+4*cfg.MaxConns)
		}
		for _, p := range []protocol.ID{"/ipfs/bitswap/1.2.0", "/ipfs/bitswap"} {
			if n := int(l.ProtocolPeer[p].StreamsInbound); n != bitswapStreamsPerPeer {
				t.Errorf("%s: %s inbound streams per peer = %d, want %d", role, p, n, bitswapStreamsPerPeer)
			}
			if n := int(l.Protocol[p].StreamsInbound); n < 4*cfg.MaxConns {
				t.Errorf("%s: %s inbound streams = %d, want at least 4 per connection (%d)", role, p, n, 4*cfg.MaxConns)
			}
		}
	}
}
