package announce

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestTableEvidenceResistsSybils replays attack 7 of issue 11 on the table:
// unknown keys flood HAVEs of random roots (more than the table holds) and
// 64 unknown keys announce a real root with the longest TTL. Entries of
// peers with evidence (a connected seed, here) stay, and the seed stays
// first among the root's providers.
func TestTableEvidenceResistsSybils(t *testing.T) {
	seed, app := peer.ID("seed"), peer.ID("app")
	tb := NewTable(TableConfig{MaxEntries: 1000, MaxEntriesPerPeer: 100, Evidence: func(p peer.ID) int {
		if p == seed {
			return 2
		}
		return 0
	}})
	defer tb.Close()
	real := manyCids(t, "real", 10)
	tb.add(seed, 3*time.Minute, FromGossip, real)
	tb.add(app, 3*time.Minute, FromGossip, real[:1]) // an honest peer without evidence
	for i := range 50 {
		tb.add(peer.ID(fmt.Sprint("sybil", i)), 18*time.Hour, FromGossip, manyCids(t, fmt.Sprint("junk", i, "-"), 100))
	}
	for _, r := range real {
		if ps := tb.Providers(r, 0); len(ps) == 0 || ps[0] != seed {
			t.Fatalf("Providers(%s) = %v after the flood, want the seed first", r, ps)
		}
	}
	for i := range 64 {
		tb.add(peer.ID(fmt.Sprint("liar", i)), 18*time.Hour, FromGossip, real[:1])
	}
	ps := tb.Providers(real[0], 16)
	if len(ps) != 16 || ps[0] != seed {
		t.Fatalf("Providers(real root, 16) = %v, want 16 with the seed first", ps)
	}
	if tb.Len() > 1000 {
		t.Fatalf("Len = %d, want at most 1000", tb.Len())
	}
	// TTLs are capped: no entry outlives DefaultMaxTTL.
	if got := tb.cfg.MaxTTL; got != DefaultMaxTTL || DefaultMaxTTL > 10*time.Minute {
		t.Fatalf("MaxTTL = %v, want %v (at most 10 min)", got, DefaultMaxTTL)
	}
}

// TestTableWithoutEvidenceEvictsOldest: with no evidence of anyone, the
// table evicts the least recently refreshed entry, as before.
func TestTableWithoutEvidenceEvictsOldest(t *testing.T) {
	tb := NewTable(TableConfig{MaxEntries: 10})
	defer tb.Close()
	rs := manyCids(t, "r", 11)
	for i, r := range rs {
		tb.Add(peer.ID(fmt.Sprint("p", i)), time.Minute, r)
	}
	if ps := tb.Providers(rs[0], 0); len(ps) != 0 {
		t.Fatalf("Providers(oldest) = %v, want evicted", ps)
	}
	if ps := tb.Providers(rs[10], 0); len(ps) != 1 {
		t.Fatalf("Providers(newest) = %v, want kept", ps)
	}
}
