package mesh

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// TestResourceLimitsFollowMaxConns: for each role the resource manager
// admits more inbound connections than the connection manager's high
// watermark (MaxConns), so that the connection manager gets to trim before
// anyone is refused, and a peer holds at most bitswapStreamsPerPeer inbound
// bitswap streams while the protocol as a whole has room for many peers.
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
