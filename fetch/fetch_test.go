package fetch_test

import (
	"context"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestPeerHit: a provider holds a 20 MiB asset; every byte comes from it,
// none from the origin, verified.
func TestPeerHit(t *testing.T) {
	a := makeAsset(t, 1, 20*MiB+12345)
	prov := newNode(t, fetch.Config{})
	prov.hold(t, a)
	o := newOrigin(t, a.data)
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {prov.info()}}})

	tg := a.t
	tg.URL = o.URL
	r, err := cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	checkBytes(t, readAll(t, r), a.data)
	waitStored(t, cl.st, a.t.Cid)
	st := r.Stats()
	if st.PeerBytes != int64(len(a.data)) || st.OriginBytes != 0 || o.sent.Load() != 0 {
		t.Errorf("Stats = peer %d origin %d (origin sent %d), want peer %d origin 0", st.PeerBytes, st.OriginBytes, o.sent.Load(), len(a.data))
	}
	if st.Peers[prov.h.ID()] != int64(len(a.data)) {
		t.Errorf("Stats.Peers = %v, want %d from %s", st.Peers, len(a.data), prov.h.ID())
	}
	if !st.Complete || st.TTFB <= 0 || st.TTLB <= 0 {
		t.Errorf("Stats = %+v, want complete with TTFB and TTLB", st)
	}
	tot := cl.f.Stats()
	if tot.Offload() != 1 {
		t.Errorf("Totals.Offload = %v, want 1", tot.Offload())
	}
	if got := prov.f.Stats().ServedBytes; got < int64(len(a.data)) {
		t.Errorf("provider ServedBytes = %d, want >= %d", got, len(a.data))
	}
	_ = cid.Undef
	_ = peer.ID("")
}
