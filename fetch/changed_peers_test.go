package fetch_test

import (
	"context"
	"io"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestChangedOriginPeersServe: an origin whose file no longer matches the
// Target (or that sends wrong bytes) does not fail a fetch that a peer can
// complete: the origin counts as dead and the peer gives every byte the
// Target names. (Found by TestFaultRandomFetches, -tags fault: one wrong
// origin response failed fetches of content two seeds held.)
func TestChangedOriginPeersServe(t *testing.T) {
	a := makeAsset(t, 72, 3*MiB+11)
	changed := append([]byte(nil), a.data...)
	for i := range changed {
		changed[i] ^= 0xff
	}
	o := newOrigin(t, changed)
	// A slow peer, so that the fetch turns to the origin as well: after its
	// first block (its burst) it keeps the reader waiting 2 s a leaf, longer
	// than the origin lets it wait before hedging one (hedgeLeaf: two
	// PeerTimeouts while its pace is unknown).
	good := newNode(t, fetch.Config{ServeBytesPerSecond: MiB / 2})
	good.hold(t, a)
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {good.info()}}})
	if err := cl.h.Connect(context.Background(), peer.AddrInfo{ID: good.h.ID(), Addrs: good.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	tg := a.t
	tg.URL = o.URL
	r, err := cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ReadAll = %v after %d bytes, want the peer's copy", err, len(got))
	}
	checkBytes(t, got, a.data)
	st := r.Stats()
	if o.reqs.Load() == 0 || st.OriginErrors == 0 || st.OriginBytes != 0 || st.PeerBytes != int64(len(a.data)) {
		t.Errorf("origin asked %d times; Stats = %+v: want the origin asked, failed, and every byte from the peer",
			o.reqs.Load(), st)
	}
	if s := cl.f.Stats(); s.BadBlocks != 0 || s.PenalisedPeers != 0 {
		t.Errorf("Stats = %+v: a changed file counted as a bad block", s)
	}
}
