package fetch_test

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestGoneProviderNotPenalised: of three providers that send nothing for
// StallTimeout, only the one connected all along is penalised as silent.
// One whose connection was cut during the fetch and one that could not be
// reached (a seed restarting, a network cut) could not have sent anything:
// penalising them would make a node ignore an honest seed for Penalty
// after it comes back (found by TestFaultRandomFetches, -tags fault).
func TestGoneProviderNotPenalised(t *testing.T) {
	a := makeAsset(t, 61, 2*MiB+5)
	o := newOrigin(t, a.data)
	tg := a.t
	tg.URL = o.URL
	control, cut, down := silentPeer(t), silentPeer(t), silentPeer(t)
	downInfo := peer.AddrInfo{ID: down.ID(), Addrs: down.Addrs()}
	down.Close()
	cl := newNode(t, fetch.Config{StallTimeout: 2 * time.Second, Providers: providers{a.t.Cid: {
		{ID: control.ID(), Addrs: control.Addrs()}, {ID: cut.ID(), Addrs: cut.Addrs()}, downInfo}}})
	sub, err := cl.h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	r, err := cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // open until its providers' silence is judged
	for cl.h.Network().Connectedness(cut.ID()) != network.Connected {
		<-sub.Out()
	}
	cl.h.Network().ClosePeer(cut.ID())
	checkBytes(t, readAll(t, r), a.data)

	// The providers are judged together, StallTimeout after Open. There is
	// no event for it: poll for the control's penalty.
	deadline := time.Now().Add(10 * time.Second)
	for !cl.f.Penalised(control.ID()) {
		if time.Now().After(deadline) {
			t.Fatal("the silent provider connected all along was not penalised")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cl.f.Penalised(cut.ID()) {
		t.Error("a provider whose connection was cut during the fetch was penalised as silent")
	}
	if cl.f.Penalised(down.ID()) {
		t.Error("a provider that could not be reached was penalised as silent")
	}
}
