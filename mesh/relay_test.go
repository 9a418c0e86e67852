package mesh_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
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

// TestSeedRelaysTwelvePeersBehindOneIP: twelve peers behind one address (the
// tabs of an office behind one NAT; here all on 127.0.0.1) each take a relay
// reservation on a seed, and another peer reaches every one of them through
// the seed. With go-libp2p's default relay limits (8 reservations per IP)
// the last four are refused ("IP constraint violation").
func TestSeedRelaysTwelvePeersBehindOneIP(t *testing.T) {
	const tabs = 12
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, DisableDHT: true})
	seedInfo := peer.AddrInfo{ID: seed.ID(), Addrs: seed.Addrs()}
	newHost := func() host.Host {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	hosts := make([]host.Host, tabs)
	for i := range hosts {
		hosts[i] = newHost()
	}
	// The relay service starts once the seed's host has declared itself
	// public (an event at start): the first reservation may be early.
	reserve := func(h host.Host) error {
		var err error
		for {
			if err = h.Connect(ctx, seedInfo); err == nil {
				if _, err = client.Reserve(ctx, h, seedInfo); err == nil {
					return nil
				}
			}
			if strings.Contains(err.Error(), "RESERVATION_REFUSED") || strings.Contains(err.Error(), "RESOURCE_LIMIT_EXCEEDED") || ctx.Err() != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	if err := reserve(hosts[0]); err != nil {
		t.Fatalf("peer 0: no reservation on the seed: %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, tabs)
	for i := 1; i < tabs; i++ {
		wg.Go(func() { errs[i] = reserve(hosts[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("peer %d of %d behind one IP: no reservation on the seed: %v", i, tabs, err)
		}
	}
	other := newHost()
	circuit := seed.Addrs()[0].Encapsulate(ma.StringCast("/p2p/" + seed.ID().String() + "/p2p-circuit"))
	for i, h := range hosts {
		if errs[i] != nil {
			continue
		}
		if err := other.Connect(ctx, peer.AddrInfo{ID: h.ID(), Addrs: []ma.Multiaddr{circuit}}); err != nil {
			t.Errorf("peer %d: not reachable through the seed: %v", i, err)
			continue
		}
		if c := other.Network().ConnsToPeer(h.ID()); len(c) == 0 || !c[0].Stat().Limited {
			t.Errorf("peer %d: connected, but not through the relay: %v", i, c)
		}
	}
}
