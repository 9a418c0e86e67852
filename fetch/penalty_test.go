package fetch_test

import (
	"context"
	"io"
	"net/http"
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

// TestEmptyProviderNotPenalised: a provider listed for content it does
// not hold (a connected seed before its summary arrived, listed first; a
// holder that evicted the content) answers the fetch's first want with
// DONT_HAVE: it is not silent (it was penalised for 30 s: found by
// TestFaultRandomFetches, an app ignoring a restarted seed). The fetch has
// nothing else (the origin never answers); the provider that never answers
// is penalised beside it, which shows the judgement ran. A crowd member
// that answers DONT_HAVE is still penalised: TestStripingSilentMember.
func TestEmptyProviderNotPenalised(t *testing.T) {
	a := makeAsset(t, 62, MiB)
	tg := a.t
	tg.URL = "http://origin.invalid/a.bin"
	control, empty := silentPeer(t), newNode(t, fetch.Config{})
	cl := newNode(t, fetch.Config{
		StallTimeout:        time.Second,
		OriginHeaderTimeout: 1500 * time.Millisecond,
		HTTPClient:          &http.Client{Transport: stallingOrigin{hang: true}},
		Providers:           providers{a.t.Cid: {empty.info(), {ID: control.ID(), Addrs: control.Addrs()}}},
	})
	// Connected first, as a bootstrap seed is: the fetch's first want
	// (want-block, send DONT_HAVE) goes to connected providers.
	for _, ai := range []peer.AddrInfo{empty.info(), {ID: control.ID(), Addrs: control.Addrs()}} {
		if err := cl.h.Connect(context.Background(), ai); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadAll(r); err == nil {
		t.Fatal("read the content with no source holding it")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !cl.f.Penalised(control.ID()) {
		if time.Now().After(deadline) {
			t.Fatal("the provider that never answered was not penalised")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cl.f.Penalised(empty.h.ID()) {
		t.Error("a provider that answered DONT_HAVE was penalised as silent")
	}
}
