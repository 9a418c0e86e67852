package fetch_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestWindowBounded: a Reader that does not read holds at most
// Config.WindowBytes of leaves although it fetches Config.ReadAhead of
// them; the leaves past the window are read back from the store when the
// reader reaches them, and every byte is counted once, from where it came
// (the first 3 leaves were in the store already).
func TestWindowBounded(t *testing.T) {
	a := makeAsset(t, 95, 20*MiB+5)
	prov := newNode(t, fetch.Config{})
	prov.hold(t, a)
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {prov.info()}}, WindowBytes: 4 * MiB})
	cl.holdLeaves(t, a, 3)
	r, err := cl.f.Open(context.Background(), a.t)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	deadline := time.Now().Add(30 * time.Second)
	waitHolding(t, r, deadline, 4*MiB) // the whole file is within ReadAhead: it all comes
	checkBytes(t, readAll(t, r), a.data)
	st := r.Stats()
	size := int64(len(a.data))
	// Duplicates (the first want's hedge may bring a leaf twice) are not
	// deliveries; read-backs must not count as local bytes.
	if st.LocalBytes != 3*MiB || st.PeerBytes != size-3*MiB || st.OriginBytes != 0 {
		t.Errorf("Stats: local %d, peer %d, origin %d, duplicate %d; want local %d, peer %d",
			st.LocalBytes, st.PeerBytes, st.OriginBytes, st.DuplicateBytes, 3*MiB, size-3*MiB)
	}
}

// TestWindowSlowReader: a Reader whose reader is slower than the leaves
// arrive (here: it reads nothing until the fetch is complete) lets go of
// the stored leaves past the two it reads back ahead of the reader,
// whatever its window.
func TestWindowSlowReader(t *testing.T) {
	a := makeAsset(t, 96, 24*MiB)
	prov := newNode(t, fetch.Config{})
	prov.hold(t, a)
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {prov.info()}}})
	r, err := cl.f.Open(context.Background(), a.t)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	deadline := time.Now().Add(30 * time.Second)
	waitHolding(t, r, deadline, 2*MiB)
	checkBytes(t, readAll(t, r), a.data)
	if st := r.Stats(); st.PeerBytes != int64(len(a.data)) || st.LocalBytes != 0 {
		t.Errorf("Stats: peer %d, local %d; want every byte once, from the peer", st.PeerBytes, st.LocalBytes)
	}
}

// waitHolding waits until r's fetch is complete (its reader has read
// nothing) and r holds at most limit bytes of leaves in memory, failing t
// if that is not so by deadline.
func waitHolding(t *testing.T, r *fetch.Reader, deadline time.Time, limit int64) {
	t.Helper()
	for !r.Stats().Complete && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	held := r.HeldBytes()
	for held > limit && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // the last leaves are being stored
		held = r.HeldBytes()
	}
	if !r.Stats().Complete || held > limit {
		t.Fatalf("complete %v, holding %d bytes before the first read, want at most %d", r.Stats().Complete, held, limit)
	}
}
