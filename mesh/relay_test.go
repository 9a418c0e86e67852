package mesh_test

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/mesh"
)

// TestAppBehindNATHoldsReservationOnSeed: an app that finds itself not
// publicly reachable (forced here, on loopback) takes a relay reservation on
// its bootstrap seed, so a third peer reaches it through the seed (circuit
// relay v2 refuses a circuit to a peer without a reservation).
//
// go-libp2p emits no event for a reservation on a relay whose addresses are
// all private (it advertises no relayed address then), so the test retries
// the relayed dial every 100 ms.
func TestAppBehindNATHoldsReservationOnSeed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, DisableDHT: true})
	app := newNode(t, mesh.Config{DisableDHT: true, Bootstrap: []string{seed.Addrs()[0].String()},
		Libp2pOptions: []libp2p.Option{libp2p.ForceReachabilityPrivate()}})
	other, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	circuit := seed.Addrs()[0].Encapsulate(ma.StringCast("/p2p-circuit"))
	target := peer.AddrInfo{ID: app.ID(), Addrs: []ma.Multiaddr{circuit}}
	var lastErr error
	for {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		lastErr = other.Connect(dctx, target)
		dcancel()
		if lastErr == nil {
			break
		}
		other.Network().(*swarm.Swarm).Backoff().Clear(app.ID()) // our retry decides
		select {
		case <-ctx.Done():
			t.Fatalf("no circuit to the app through its seed: %v", lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
	conns := other.Network().ConnsToPeer(app.ID())
	if len(conns) == 0 || !conns[0].Stat().Limited {
		t.Fatalf("connected to the app, but not through the relay: %v", conns)
	}
}
