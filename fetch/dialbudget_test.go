package fetch_test

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
)

// connectedTo returns how many of ns n is connected to.
func connectedTo(n *node, ns []*node) int {
	k := 0
	for _, m := range ns {
		if n.h.Network().Connectedness(m.h.ID()) == network.Connected {
			k++
		}
	}
	return k
}

// budgetFetch starts a fetch of a 16 MiB asset (seed) on a node with the
// given PeerBudget and a 2 MiB window, told of n providers that hold it,
// after connecting it to others; it reads and checks the first MiB.
func budgetFetch(t *testing.T, seed uint64, n, budget int, others ...*node) (*node, []*node, *fetch.Reader, asset) {
	t.Helper()
	a := makeAsset(t, seed, 16*MiB)
	holders := make([]*node, n)
	infos := make([]peer.AddrInfo, n)
	for i := range holders {
		holders[i] = newNode(t, fetch.Config{})
		holders[i].hold(t, a)
		infos[i] = holders[i].info()
	}
	o := newOrigin(t, a.data)
	cl := newNode(t, fetch.Config{PeerBudget: budget, WindowBytes: 2 * MiB, Providers: providers{a.t.Cid: infos}})
	for _, m := range others {
		if err := cl.h.Connect(context.Background(), m.info()); err != nil {
			t.Fatal(err)
		}
	}
	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	head := make([]byte, MiB)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	checkBytes(t, head, a.data[:MiB])
	return cl, holders, r, a
}

// TestPeerBudget: a fetch told of five providers, all holding the
// content, on a host with a budget of two peers (Config.PeerBudget),
// dials two and takes everything from them; when one of them goes
// mid-fetch it dials a spare. Without the budget it dialled all five.
func TestPeerBudget(t *testing.T) {
	cl, holders, r, a := budgetFetch(t, 70, 5, 2)
	if k := connectedTo(cl, holders); k > 2 {
		t.Fatalf("connected to %d of 5 providers, want at most PeerBudget (2)", k)
	}
	// One source goes: its host closes. A spare is then dialled: a
	// provider not connected before connects.
	var gone *node
	was := map[peer.ID]bool{}
	for _, h := range holders {
		if cl.h.Network().Connectedness(h.h.ID()) == network.Connected {
			was[h.h.ID()] = true
			if gone == nil {
				gone = h
			}
		}
	}
	if gone == nil {
		t.Fatal("connected to no provider after the first MiB came from peers")
	}
	spare := make(chan peer.ID, len(holders))
	cl.h.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if p := c.RemotePeer(); !was[p] && slices.ContainsFunc(holders, func(h *node) bool { return h.h.ID() == p }) {
			spare <- p
		}
	}})
	if err := gone.h.Close(); err != nil {
		t.Fatal(err)
	}
	readRestSpare(t, r, a, spare, "one of the two sources went")
	if k := connectedTo(cl, holders); k > 2 {
		t.Errorf("connected to %d providers after one went, want at most 2", k)
	}
}

// TestPeerBudgetMinSources: a host whose budget is spent on a peer that
// holds nothing of the content still dials two of the content's providers
// (minSources) and takes it from them, not from the origin; when it
// penalises those two mid-fetch, it dials spares.
func TestPeerBudgetMinSources(t *testing.T) {
	other := newNode(t, fetch.Config{})
	cl, holders, r, a := budgetFetch(t, 71, 4, 1, other)
	var first []*node
	for _, h := range holders {
		if cl.h.Network().Connectedness(h.h.ID()) == network.Connected {
			first = append(first, h)
		}
	}
	if len(first) != 2 {
		t.Fatalf("connected to %d of the 4 providers, want 2 (the budget is spent on a peer holding nothing)", len(first))
	}
	// Both are penalised (as liars would be): the fetch dials spares.
	spare := make(chan peer.ID, len(holders))
	cl.h.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if p := c.RemotePeer(); p != first[0].h.ID() && p != first[1].h.ID() && p != other.h.ID() {
			spare <- p
		}
	}})
	for _, h := range first {
		cl.f.PenaliseMissing(h.h.ID())
	}
	readRestSpare(t, r, a, spare, "both sources were penalised")
}

// readRestSpare reads the rest of a (past its first MiB) from r and waits
// for spare to name a provider dialled after what happened.
func readRestSpare(t *testing.T, r *fetch.Reader, a asset, spare <-chan peer.ID, what string) {
	t.Helper()
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, rest, a.data[MiB:])
	select {
	case p := <-spare:
		t.Logf("spare %s dialled after %s; Stats peers %v, origin %d", p, what, r.Stats().Peers, r.Stats().OriginBytes)
	case <-time.After(10 * time.Second):
		t.Fatalf("no spare dialled after %s; Stats %+v", what, r.Stats())
	}
}
