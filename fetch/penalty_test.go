package fetch_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
)

// awaitPenalised waits up to within for f to penalise p (who is named by
// what) and fails t if it does not. A provider's silence is judged
// StallTimeout after a fetch's start, with no event for it: it polls.
func awaitPenalised(t *testing.T, f *fetch.Fetcher, p peer.ID, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f.Penalised(p) {
		if time.Now().After(deadline) {
			t.Fatalf("%s was not penalised within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

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
	// Connected before the fetch, so that the first want (to the first
	// connected provider) goes to control: were cut connected first, the
	// want would go to cut and control would owe nothing.
	if err := cl.h.Connect(context.Background(), peer.AddrInfo{ID: control.ID(), Addrs: control.Addrs()}); err != nil {
		t.Fatal(err)
	}

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

	// The providers are judged together, StallTimeout after Open.
	awaitPenalised(t, cl.f, control.ID(), 10*time.Second, "the silent provider connected all along")
	if cl.f.Penalised(cut.ID()) {
		t.Error("a provider whose connection was cut during the fetch was penalised as silent")
	}
	if cl.f.Penalised(down.ID()) {
		t.Error("a provider that could not be reached was penalised as silent")
	}
}

// TestEmptyProviderNotPenalised: of two connected providers listed for
// content neither holds, the first (a seed before its summary came, a
// holder that evicted the content) is sent the fetch's first want-block,
// which asks for an answer, and says DONT_HAVE; the second is sent only
// bitswap's broadcast want-have, which asks for none, and says nothing, as
// a peer without the block should. Neither is silent: both were penalised
// for 30 s (found by TestFaultRandomFetches, an app penalising a restarted
// seed). The fetch has nothing else (the origin never answers). A third
// client's fetch, with the quiet peer as its only provider, sends it the
// first want-block: unanswered, it is penalised, which shows the judgement
// ran. A crowd member that answers DONT_HAVE is still penalised:
// TestStripingSilentMember.
func TestEmptyProviderNotPenalised(t *testing.T) {
	a := makeAsset(t, 62, MiB)
	tg := a.t
	tg.URL = "http://origin.invalid/a.bin"
	quiet, empty := silentPeer(t), newNode(t, fetch.Config{})
	quietInfo := peer.AddrInfo{ID: quiet.ID(), Addrs: quiet.Addrs()}
	fetchNothing := func(provs ...peer.AddrInfo) *node {
		cl := newNode(t, fetch.Config{
			StallTimeout:        time.Second,
			OriginHeaderTimeout: 1500 * time.Millisecond,
			HTTPClient:          &http.Client{Transport: stallingOrigin{hang: true}},
			Providers:           providers{a.t.Cid: provs},
		})
		// Connected first, as a bootstrap seed is: the first want goes to
		// the first provider connected.
		for _, ai := range provs {
			if err := cl.h.Connect(context.Background(), ai); err != nil {
				t.Fatal(err)
			}
		}
		r, err := cl.f.Open(context.Background(), tg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if _, err := io.ReadAll(r); err == nil {
			t.Fatal("read the content with no source holding it")
		}
		return cl
	}
	cl := fetchNothing(empty.info(), quietInfo)
	witness := fetchNothing(quietInfo)
	awaitPenalised(t, witness.f, quiet.ID(), 10*time.Second, "a provider sent the first want-block that never answered")
	if cl.f.Penalised(empty.h.ID()) {
		t.Error("a provider that answered DONT_HAVE was penalised as silent")
	}
	if cl.f.Penalised(quiet.ID()) {
		t.Error("a provider asked for no answer (a broadcast want-have) was penalised as silent")
	}
}

// TestReconnectedProviderOwesNothing: a provider asked for an answer whose
// connection then goes (a seed killed and restarted under the same key)
// owes nothing on the new connection: what it was asked went with the old
// one. Without that, a later fetch that did not ask it penalised it as
// silent (found by TestFaultRandomFetches: "app 0 penalised the honest
// seed 1"). A second provider, asked by that later fetch and silent, is
// penalised: the judgement ran.
func TestReconnectedProviderOwesNothing(t *testing.T) {
	a, b := makeAsset(t, 63, MiB), makeAsset(t, 64, MiB)
	quiet, asked := askedSilentPeer(t)
	witness := silentPeer(t)
	quietInfo := peer.AddrInfo{ID: quiet.ID(), Addrs: quiet.Addrs()}
	witnessInfo := peer.AddrInfo{ID: witness.ID(), Addrs: witness.Addrs()}
	cl := newNode(t, fetch.Config{
		StallTimeout:        time.Second,
		OriginHeaderTimeout: 1500 * time.Millisecond,
		HTTPClient:          &http.Client{Transport: stallingOrigin{hang: true}},
		Providers:           providers{a.t.Cid: {quietInfo}, b.t.Cid: {witnessInfo, quietInfo}},
	})
	ctx := context.Background()
	for _, ai := range []peer.AddrInfo{witnessInfo, quietInfo} {
		if err := cl.h.Connect(ctx, ai); err != nil {
			t.Fatal(err)
		}
	}
	open := func(tg fetch.Target) *fetch.Reader {
		tg.URL = "http://origin.invalid/x"
		r, err := cl.f.Open(ctx, tg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	r := open(a.t)
	<-asked // quiet was asked for an answer: it owes one
	cl.h.Network().ClosePeer(quiet.ID())
	if err := cl.h.Connect(ctx, quietInfo); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); err == nil {
		t.Fatal("read content nobody holds")
	}
	if _, err := io.ReadAll(open(b.t)); err == nil {
		t.Fatal("read content nobody holds")
	}
	awaitPenalised(t, cl.f, witness.ID(), 10*time.Second, "the silent provider the second fetch asked")
	if cl.f.Penalised(quiet.ID()) {
		t.Error("a provider asked on a connection that went, and not since, was penalised as silent")
	}
}

// TestSilentProviderAskedLate: a provider that sends nothing is judged
// silent once it has owed an answer for PeerTimeout, even when that is
// after StallTimeout (StallTimeout is shorter than PeerTimeout here, so at
// StallTimeout the want has gone unanswered for less than PeerTimeout: as
// when the want goes out late on a loaded machine). Before, the providers
// were judged once, at StallTimeout, and such a provider never. With a
// StallTimeout of 1 ms the provider is not even connected or asked yet
// when it passes (the dial): it is looked at again PeerTimeout later.
// Before that, it was never judged (3 runs of 3), and on a loaded machine
// neither was the first case's (1 run in 200 of the unit suite twice over;
// 8 in 180 beside a busy loop), its want not out by StallTimeout. The
// origin answers only once the provider has been asked for an answer: a
// provider asked for none owes none. On a loaded machine the provider was
// sometimes never asked (the project's CI, once; 3 runs in 90 beside a busy
// loop): the fetch's first want to it went out before its addresses were
// known and failed (TestFirstWantDialsProvider), and the origin delivered
// everything before anything else asked it.
func TestSilentProviderAskedLate(t *testing.T) {
	for _, stall := range []time.Duration{300 * time.Millisecond, time.Millisecond} {
		t.Run(stall.String(), func(t *testing.T) {
			a := makeAsset(t, 61, 2*MiB)
			silent, asked := askedSilentPeer(t)
			o := newOrigin(t, a.data)
			o.hold = asked
			tg := a.t
			tg.URL = o.URL
			cl := newNode(t, fetch.Config{StallTimeout: stall, PeerTimeout: 2 * time.Second,
				Providers: providers{a.t.Cid: {{ID: silent.ID(), Addrs: silent.Addrs()}}}})
			r, err := cl.f.Open(context.Background(), tg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close() // open until the provider's silence is judged
			checkBytes(t, readAll(t, r), a.data)
			awaitPenalised(t, cl.f, silent.ID(), 8*time.Second, "the provider asked after "+stall.String()+" or less before StallTimeout")
		})
	}
}

// askedSilentPeer is silentPeer that also says on asked when it is first
// asked for an answer: sent a want that asks for DONT_HAVE if it does not
// have the block (a broadcast want-have asks for none).
func askedSilentPeer(t *testing.T) (host.Host, <-chan struct{}) {
	t.Helper()
	h := newHost(t)
	asked := make(chan struct{})
	var once sync.Once
	onMessages(h, func(m bsmsg.BitSwapMessage) {
		if slices.ContainsFunc(m.Wantlist(), func(e bsmsg.Entry) bool { return !e.Cancel && e.SendDontHave }) {
			once.Do(func() { close(asked) })
		}
	})
	return h, asked
}

// TestLatePenaltyLifted: a holder penalised for blocks it did not send
// (HAVEs not followed by blocks in time, or silence: a liar, or a holder
// at its serving cap) that then sends the block a fetch waits for was
// busy, not lying: the block is taken and the penalty lifted. Before, its late block was dropped and
// the fetch, with no one else to ask, stalled; in a congested flash crowd
// the apps penalised most of their busy neighbours for 10 min this way.
func TestLatePenaltyLifted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := makeAsset(t, 21, 100<<10) // one leaf: the root is the block
	busy := newHost(t)
	wants := make(chan bsmsg.BitSwapMessage, 16)
	listen(busy, wants)
	o := newOrigin(t, a.data)
	tg := a.t
	tg.URL = o.URL
	cl := newNode(t, fetch.Config{PeerTimeout: time.Minute, StallTimeout: 5 * time.Second,
		Providers: providers{tg.Cid: {{ID: busy.ID(), Addrs: busy.Addrs()}}}})
	r := cl.open(t, tg)
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		read <- b
	}()
	waitMessage(ctx, t, wants, func(m bsmsg.BitSwapMessage) bool {
		return slices.ContainsFunc(m.Wantlist(), func(e bsmsg.Entry) bool {
			return !e.Cancel && e.WantType == bspb.Message_Wantlist_Block && e.Cid.Equals(tg.Cid)
		})
	})
	if !cl.f.PenaliseMissing(busy.ID()) || !cl.f.Penalised(busy.ID()) {
		t.Fatal("the busy holder was not penalised")
	}
	b, err := blocks.NewBlockWithCid(a.data, tg.Cid)
	if err != nil {
		t.Fatal(err)
	}
	m := bsmsg.New(false)
	m.AddBlock(b)
	send(busy, cl.h.ID(), m)
	select {
	case got := <-read:
		checkBytes(t, got, a.data)
	case <-ctx.Done():
		t.Fatal("the read did not end")
	}
	if st := r.Stats(); st.PeerBytes != int64(len(a.data)) {
		t.Errorf("PeerBytes = %d, want %d: the late block was not taken", st.PeerBytes, len(a.data))
	}
	if cl.f.Penalised(busy.ID()) {
		t.Error("the holder is still penalised after it sent the block")
	}
}
