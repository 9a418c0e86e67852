package mesh

import (
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/fetch"
)

// gaterOption makes gate the host's connection gater, so that a peer the
// fetcher refuses (a bitswap message over the limits, silent streams)
// cannot connect again while it is refused. It runs after every other
// option: a gater set through Config.Libp2pOptions is kept and asked too
// (libp2p.ConnectionGater accepts only one gater).
func gaterOption(gate *fetch.Gater) libp2p.Option {
	return func(c *libp2p.Config) error {
		if c.ConnectionGater == nil {
			c.ConnectionGater = gate
			return nil
		}
		c.ConnectionGater = gaters{gate, c.ConnectionGater}
		return nil
	}
}

// gaters allows what each of its gaters allows.
type gaters []connmgr.ConnectionGater

var _ connmgr.ConnectionGater = gaters(nil)

func (gs gaters) InterceptPeerDial(p peer.ID) bool {
	for _, g := range gs {
		if !g.InterceptPeerDial(p) {
			return false
		}
	}
	return true
}

func (gs gaters) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	for _, g := range gs {
		if !g.InterceptAddrDial(p, a) {
			return false
		}
	}
	return true
}

func (gs gaters) InterceptAccept(cm network.ConnMultiaddrs) bool {
	for _, g := range gs {
		if !g.InterceptAccept(cm) {
			return false
		}
	}
	return true
}

func (gs gaters) InterceptSecured(d network.Direction, p peer.ID, cm network.ConnMultiaddrs) bool {
	for _, g := range gs {
		if !g.InterceptSecured(d, p, cm) {
			return false
		}
	}
	return true
}

func (gs gaters) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	for _, g := range gs {
		if ok, r := g.InterceptUpgraded(c); !ok {
			return false, r
		}
	}
	return true, 0
}
