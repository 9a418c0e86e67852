//go:build fault

package mesh_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"

	"github.com/meshcdn/meshcdn/mesh"
)

// TestFaultIdentifyHeld: MaxConns/8 - 1 peers (15 on a seed of MaxConns
// 128) each hold as many identify push streams open as the seed admits,
// negotiated and then silent (go-libp2p's identify waits 5 s for a push,
// then resets it; each is opened again at once). go-libp2p's limits gave
// identify 128 inbound streams in all (scaled to a seed's 1 GiB) and 16 per
// peer: 8 such peers filled it, and the seed reset every new app's identify
// (an audit: 12 peers), so the app never learnt the seed's protocols and
// addresses. Now a peer holds 8 push streams (one per connection it may
// have), and identify admits enough for MaxConns/8 peers holding all they
// may: a new app's identify of the seed completes, three times over.
func TestFaultIdentifyHeld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, MaxConns: 128, DisableDHT: true})
	attackCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	peers := seed.Config().MaxConns/8 - 1
	for range peers {
		h := attacker(t)
		connectTCP(ctx, t, h, seed)
		holdStreams(attackCtx, h, seed, []protocol.ID{identify.IDPush}, &wg)
	}
	t.Logf("%d peers hold %d identify push streams at the seed", peers, protocolStreamsIn(seed, identify.IDPush))
	for i := range 3 {
		if err := identifySeed(ctx, t, seed); err != nil {
			t.Errorf("new app %d: %v", i, err)
		}
	}
}

// protocolStreamsIn is how many inbound streams of p n's resource manager
// holds.
func protocolStreamsIn(n *mesh.Node, p protocol.ID) int {
	var in int
	_ = n.Host().Network().ResourceManager().ViewProtocol(p, func(s network.ProtocolScope) error {
		in = s.Stat().NumStreamsInbound
		return nil
	})
	return in
}

// identifySeed starts an app, connects it to seed over TCP and returns the
// outcome of its identify of the seed.
func identifySeed(ctx context.Context, t *testing.T, seed *mesh.Node) error {
	t.Helper()
	app := newNode(t, mesh.Config{DisableDHT: true})
	defer app.Close()
	sub, err := app.Host().EventBus().Subscribe([]any{new(event.EvtPeerIdentificationCompleted), new(event.EvtPeerIdentificationFailed)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var tcp string
	for _, a := range seed.Addrs() {
		if s := a.String(); strings.Contains(s, "/tcp/") && !strings.Contains(s, "/ws") {
			tcp = s
		}
	}
	if err := app.Connect(ctx, tcp); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case e := <-sub.Out():
			switch ev := e.(type) {
			case event.EvtPeerIdentificationCompleted:
				if ev.Peer == seed.ID() {
					return nil
				}
			case event.EvtPeerIdentificationFailed:
				if ev.Peer == seed.ID() {
					return ev.Reason
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
