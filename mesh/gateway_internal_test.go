package mesh

import (
	"context"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestGatewayUnboundedOpenFails: with no MaxBuffer (negative), a fetch
// that fails to open (here the fetcher is closed, as when the node closes
// under a parked request that reads on) returns its error; it released
// the nil budget and panicked the request's handler.
func TestGatewayUnboundedOpenFails(t *testing.T) {
	n, err := New(context.Background(), Config{Name: "gw-open", InMemory: true,
		ListenAddrs: LoopbackAddrs(RoleApp), MDNS: Off, NATPortMap: Off})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	g := n.Gateway(GatewayConfig{MaxBuffer: -1})
	c, err := cid.NewPrefixV1(cid.Raw, mh.SHA2_256).Sum([]byte("parked"))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.fetcher.Close(); err != nil {
		t.Fatal(err)
	}
	s := &source{g: g, ctx: context.Background(), t: fetch.Target{Cid: c}, size: -1, leaf: -1}
	if err := s.open(0); err == nil {
		t.Error("open on a closed fetcher succeeded")
	}
}
