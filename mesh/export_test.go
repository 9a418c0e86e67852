package mesh

import (
	"context"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// GatewayParkCheck is how long a request waiting for the gateway's
// MaxBuffer may wait for a blocked write to be parked (gatewayParkCheck),
// for tests.
const GatewayParkCheck = gatewayParkCheck

// BootstrapTag is the connection manager's protection tag of bootstrap
// peers (bootstrapTag), for tests: gossipsub protects its mesh peers under
// tags of its own, so IsProtected(p, "") says nothing of ours.
const BootstrapTag = bootstrapTag

// LookupProviders asks the node's provider finder, the one its fetcher
// uses, for at most count holders of root (count <= 0: all), for tests.
func (n *Node) LookupProviders(ctx context.Context, root cid.Cid, count int) []peer.ID {
	var out []peer.ID
	for ai := range (providers{n: n, table: n.ann.Table()}).FindProvidersAsync(ctx, root, count) {
		out = append(out, ai.ID)
	}
	return out
}
