package announce

import (
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// rootOf is a dag-pb root named s.
func rootOf(s string) cid.Cid {
	h, _ := mh.Sum([]byte(s), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.DagProtobuf, h)
}

// gossip is what readLoop records for a message of kind k, seqno seq, from p.
func gossip(tb *Table, p peer.ID, k Kind, seq uint64, ttl time.Duration, roots ...string) {
	cs := make([]cid.Cid, len(roots))
	for i, r := range roots {
		cs[i] = rootOf(r)
	}
	if k == Drop {
		tb.remove(p, seq, cs)
		return
	}
	tb.update(update{peer: p, ttl: ttl, src: FromGossip, seq: seq, fetching: k == Fetch}, cs)
}

// TestTableFetchers: a FETCH makes a peer a fetcher (and a provider, not a
// holder); a later HAVE makes it a holder and takes it out of Fetchers; a DROP removes
// it; a FETCH that is not renewed expires at its TTL; a message older than
// what set the pair (by the author's seqno) changes nothing.
func TestTableFetchers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(TableConfig{})
		defer tb.Close()
		a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
		root := rootOf("site")
		gossip(tb, a, Fetch, 10, FetchingTTL, "site")
		gossip(tb, b, Fetch, 20, FetchingTTL, "site")
		gossip(tb, c, Have, 30, 3*time.Minute, "site")
		if got := sorted(tb.Fetchers(root)); !slices.Equal(got, []peer.ID{a, b}) {
			t.Fatalf("Fetchers = %v, want [a b]", got)
		}
		if got := sorted(tb.Providers(root, 0)); !slices.Equal(got, []peer.ID{a, b, c}) {
			t.Fatalf("Providers = %v, want [a b c]: fetchers serve what they have", got)
		}
		if got := tb.Holders(root, 0); !slices.Equal(got, []peer.ID{c}) {
			t.Fatalf("Holders = %v, want [c]: a fetcher does not hold it yet", got)
		}
		if s := tb.Stats(); s.Fetching != 2 {
			t.Fatalf("Stats().Fetching = %d, want 2", s.Fetching)
		}

		gossip(tb, a, Have, 11, 3*time.Minute, "site") // a holds it now
		if got := tb.Fetchers(root); !slices.Equal(got, []peer.ID{b}) {
			t.Fatalf("Fetchers after a's HAVE = %v, want [b]", got)
		}
		if got := sorted(tb.Holders(root, 0)); !slices.Equal(got, []peer.ID{a, c}) {
			t.Fatalf("Holders after a's HAVE = %v, want [a c]", got)
		}
		gossip(tb, a, Fetch, 9, FetchingTTL, "site") // overtaken by the HAVE
		if got := tb.Fetchers(root); !slices.Equal(got, []peer.ID{b}) {
			t.Fatalf("Fetchers after a's older FETCH = %v, want [b]", got)
		}
		gossip(tb, b, Drop, 19, 0, "site") // older than b's FETCH
		if got := tb.Fetchers(root); !slices.Equal(got, []peer.ID{b}) {
			t.Fatalf("Fetchers after b's older DROP = %v, want [b]", got)
		}
		gossip(tb, b, Drop, 21, 0, "site") // b gave up
		if got := tb.Fetchers(root); len(got) != 0 {
			t.Fatalf("Fetchers after b's DROP = %v, want none", got)
		}
		if got := sorted(tb.Holders(root, 0)); !slices.Equal(got, []peer.ID{a, c}) {
			t.Fatalf("Holders after b's DROP = %v, want [a c]: a fetch given up holds nothing", got)
		}
		if got := sorted(tb.Providers(root, 0)); !slices.Equal(got, []peer.ID{a, c}) {
			t.Fatalf("Providers after b's DROP = %v, want [a c]", got)
		}

		gossip(tb, b, Fetch, 22, FetchingTTL, "site") // b tries again
		time.Sleep(FetchingTTL - time.Second)
		if got := tb.Fetchers(root); !slices.Equal(got, []peer.ID{b}) {
			t.Fatalf("Fetchers just before the TTL = %v, want [b]", got)
		}
		time.Sleep(time.Second)
		if got := tb.Fetchers(root); len(got) != 0 {
			t.Fatalf("Fetchers at the TTL = %v, want none", got)
		}
		tb.Sweep()
		if s := tb.Stats(); s.Fetching != 0 || s.Stale != 2 {
			t.Fatalf("Stats() = %+v, want Fetching 0 and Stale 2", s)
		}
		if got := sorted(tb.Providers(root, 0)); !slices.Equal(got, []peer.ID{a, c}) {
			t.Fatalf("Providers after the sweep = %v, want [a c]", got)
		}
	})
}

// TestTableFetchersCapAndRank: Fetchers returns at most MaxFetchers peers,
// those with evidence first, so sybils announcing fetches cannot push out
// the peers this node has reason to trust.
func TestTableFetchersCapAndRank(t *testing.T) {
	good := map[peer.ID]bool{"seed": true, "friend": true}
	tb := NewTable(TableConfig{Evidence: func(p peer.ID) int {
		if good[p] {
			return 1
		}
		return 0
	}})
	defer tb.Close()
	for i := range 200 {
		gossip(tb, peer.ID(fmt.Sprint("sybil", i)), Fetch, 1, time.Hour, "site")
	}
	gossip(tb, "seed", Fetch, 1, time.Minute, "site")
	gossip(tb, "friend", Fetch, 1, time.Minute, "site")
	got := tb.Fetchers(rootOf("site"))
	if len(got) != DefaultMaxFetchers {
		t.Fatalf("len(Fetchers) = %d, want the cap %d", len(got), DefaultMaxFetchers)
	}
	if first := sorted(got[:2]); !slices.Equal(first, []peer.ID{"friend", "seed"}) {
		t.Fatalf("Fetchers starts with %v, want the peers with evidence", got[:2])
	}
	if s := tb.Stats(); s.Fetching != 202 {
		t.Fatalf("Stats().Fetching = %d, want 202", s.Fetching)
	}
	all := NewTable(TableConfig{MaxFetchers: -1})
	defer all.Close()
	for i := range 100 {
		gossip(all, peer.ID(fmt.Sprint("p", i)), Fetch, 1, time.Hour, "site")
	}
	if n := len(all.Fetchers(rootOf("site"))); n != 100 {
		t.Fatalf("len(Fetchers) with MaxFetchers -1 = %d, want 100", n)
	}
}

func sorted(ps []peer.ID) []peer.ID {
	ps = slices.Clone(ps)
	slices.Sort(ps)
	return ps
}

// TestSweepSkipsUntilAnExpiry: Sweep removes each entry once its TTL has
// run out, also when entries were refreshed or added with shorter TTLs in
// between (it skips its walk until the earliest expiry it knows of).
func TestSweepSkipsUntilAnExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(TableConfig{})
		defer tb.Close()
		a, b, c := rootOf("a"), rootOf("b"), rootOf("c")
		tb.Add("p", time.Minute, a)
		tb.Add("p", 3*time.Minute, b)
		time.Sleep(30 * time.Second)
		if n := tb.Sweep(); n != 0 {
			t.Fatalf("Sweep at 30 s = %d, want 0", n)
		}
		tb.Add("p", 3*time.Minute, a) // refreshed: now expires at 3:30
		time.Sleep(10 * time.Second)
		tb.Add("p", 10*time.Second, c) // expires at 0:50
		time.Sleep(10 * time.Second)
		if n := tb.Sweep(); n != 1 || tb.Len() != 2 {
			t.Fatalf("Sweep at 50 s = %d, Len %d; want c gone, 2 left", n, tb.Len())
		}
		time.Sleep(20 * time.Second) // 1:10, past a's first TTL
		if n := tb.Sweep(); n != 0 {
			t.Fatalf("Sweep at 1:10 = %d, want 0: a was refreshed", n)
		}
		time.Sleep(2 * time.Minute) // 3:10
		if n := tb.Sweep(); n != 1 || len(tb.Providers(b, 0)) != 0 {
			t.Fatalf("Sweep at 3:10 = %d, want b gone", n)
		}
		time.Sleep(20 * time.Second) // 3:30
		if n := tb.Sweep(); n != 1 || tb.Len() != 0 {
			t.Fatalf("Sweep at 3:30 = %d, Len %d; want a gone, none left", n, tb.Len())
		}
	})
}

// TestTableFetchStarts: the table tells when it first heard a peer's FETCH
// of a root; a repeated FETCH keeps that time, a HAVE ends it, and a FETCH
// after the HAVE starts it again.
func TestTableFetchStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(TableConfig{})
		defer tb.Close()
		since := func(root cid.Cid, p peer.ID) (time.Time, bool) {
			at, ok := tb.FetchStarts(root)[p]
			return at, ok
		}
		a, b := peer.ID("a"), peer.ID("b")
		root := rootOf("video")
		t0 := time.Now()
		gossip(tb, a, Fetch, 10, FetchingTTL, "video")
		time.Sleep(3 * time.Second)
		gossip(tb, b, Fetch, 20, FetchingTTL, "video")
		gossip(tb, a, Fetch, 11, FetchingTTL, "video") // again: still since t0
		if at, ok := since(root, a); !ok || !at.Equal(t0) {
			t.Errorf("a fetching since %v (%v), want %v", at, ok, t0)
		}
		if at, ok := since(root, b); !ok || !at.Equal(t0.Add(3*time.Second)) {
			t.Errorf("b fetching since %v (%v), want 3 s later", at, ok)
		}
		gossip(tb, a, Have, 12, 3*time.Minute, "video")
		if _, ok := since(root, a); ok {
			t.Error("a holder still has a fetch start")
		}
		time.Sleep(time.Second)
		gossip(tb, a, Fetch, 13, FetchingTTL, "video")
		if at, ok := since(root, a); !ok || !at.Equal(t0.Add(4*time.Second)) {
			t.Errorf("a fetching again since %v (%v), want 4 s after the first", at, ok)
		}
		if _, ok := since(rootOf("other"), a); ok {
			t.Error("a fetch start for a root never announced")
		}
		time.Sleep(FetchingTTL)
		if _, ok := since(root, b); ok {
			t.Error("an expired FETCH still has a fetch start")
		}
	})
}
