package announce

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
)

func manyCids(t testing.TB, prefix string, n int) []cid.Cid {
	cs := make([]cid.Cid, n)
	for i := range cs {
		cs[i] = testCid(t, cid.Raw, fmt.Sprint(prefix, i))
	}
	return cs
}

func TestTableCapsEvictOldestFirst(t *testing.T) {
	tb := NewTable(TableConfig{MaxEntries: 100, MaxEntriesPerPeer: 60})
	defer tb.Close()
	a, b := peer.ID("a"), peer.ID("b")
	ra := manyCids(t, "a", 80)
	rb := manyCids(t, "b", 50)
	if n := tb.Add(a, time.Minute, ra...); n != 80 {
		t.Fatalf("Add(80) = %d new", n)
	}
	// a is capped at 60: its first 20 went.
	if got := tb.Len(); got != 60 {
		t.Fatalf("Len = %d after 80 of one peer, want per-peer cap 60", got)
	}
	if ps := tb.Providers(ra[0], 0); len(ps) != 0 {
		t.Fatalf("Providers(first root of a) = %v, want evicted", ps)
	}
	tb.Add(b, time.Minute, rb...)
	// The table is capped at 100: a's oldest 10 went, b's all stay.
	if got := tb.Len(); got != 100 {
		t.Fatalf("Len = %d, want cap 100", got)
	}
	for _, r := range rb {
		if ps := tb.Providers(r, 0); len(ps) != 1 || ps[0] != b {
			t.Fatalf("Providers(%s) = %v, want [b]", r, ps)
		}
	}
	if ps := tb.Providers(ra[29], 0); len(ps) != 0 {
		t.Fatalf("Providers(a's 30th) = %v, want evicted", ps)
	}
	if ps := tb.Providers(ra[30], 0); len(ps) != 1 {
		t.Fatalf("Providers(a's 31st) = %v, want [a]", ps)
	}
	// Refreshing a's oldest makes it the newest.
	tb.Add(a, time.Minute, ra[30])
	tb.Add(b, time.Minute, testCid(t, cid.Raw, "new"))
	if ps := tb.Providers(ra[30], 0); len(ps) != 1 {
		t.Fatalf("Providers(refreshed) = %v, want kept", ps)
	}
	if ps := tb.Providers(ra[31], 0); len(ps) != 0 {
		t.Fatalf("Providers(oldest after refresh) = %v, want evicted", ps)
	}
	if s := tb.Stats(); s.Evicted != 31 || s.Entries != 100 || s.Peers != 2 {
		t.Fatalf("Stats = %+v, want 31 evicted, 100 entries, 2 peers", s)
	}
}

func TestTableExpiry(t *testing.T) {
	tb := NewTable(TableConfig{MaxTTL: time.Hour})
	defer tb.Close()
	r := testCid(t, cid.Raw, "r")
	tb.Add("short", time.Nanosecond, r)
	tb.Add("long", time.Hour, r)
	if ps := tb.Providers(r, 0); len(ps) != 1 || ps[0] != "long" {
		t.Fatalf("Providers = %v, want [long]: the other expired", ps)
	}
	if n := tb.Sweep(); n != 1 {
		t.Fatalf("Sweep = %d, want 1", n)
	}
	if s := tb.Stats(); s.Expired != 1 || s.Entries != 1 {
		t.Fatalf("Stats = %+v, want 1 expired, 1 entry", s)
	}
	if n := tb.Remove("long", r); n != 1 || tb.Len() != 0 {
		t.Fatalf("Remove = %d, Len %d, want 1, 0", n, tb.Len())
	}
}

func TestTableSelfNeverListed(t *testing.T) {
	tb := NewTable(TableConfig{Self: "me"})
	defer tb.Close()
	r := testCid(t, cid.Raw, "r")
	if n := tb.Add("me", time.Minute, r); n != 0 || tb.Len() != 0 {
		t.Fatalf("Add(self) = %d, Len %d, want 0, 0", n, tb.Len())
	}
}

// fakeFinder is a routing.ContentDiscovery that serves fixed providers and
// records how often it was asked.
type fakeFinder struct {
	provs map[cid.Cid][]peer.AddrInfo
	asked chan cid.Cid
	block bool // never answer; close on ctx end
}

func (f *fakeFinder) FindProvidersAsync(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo {
	ch := make(chan peer.AddrInfo)
	f.asked <- c
	go func() {
		defer close(ch)
		if f.block {
			<-ctx.Done()
			return
		}
		for _, ai := range f.provs[c] {
			select {
			case ch <- ai:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

var _ routing.ContentDiscovery = (*fakeFinder)(nil)

func collect(ch <-chan peer.AddrInfo) []peer.ID {
	var ps []peer.ID
	for ai := range ch {
		ps = append(ps, ai.ID)
	}
	return ps
}

func TestTableFallbackOnlyWhenEmpty(t *testing.T) {
	known, unknown := testCid(t, cid.Raw, "known"), testCid(t, cid.Raw, "unknown")
	f := &fakeFinder{
		provs: map[cid.Cid][]peer.AddrInfo{unknown: {{ID: "me"}, {ID: "d1"}, {ID: "d2"}}},
		asked: make(chan cid.Cid, 10),
	}
	tb := NewTable(TableConfig{Self: "me", Fallback: f})
	defer tb.Close()
	tb.Add("g", time.Minute, known)
	ctx := t.Context()
	if ps := collect(tb.FindProvidersAsync(ctx, known, 0)); len(ps) != 1 || ps[0] != "g" {
		t.Fatalf("FindProvidersAsync(known) = %v, want [g]", ps)
	}
	if len(f.asked) != 0 {
		t.Fatalf("the fallback was asked although gossip knew a provider")
	}
	if ps := collect(tb.FindProvidersAsync(ctx, unknown, 0)); len(ps) != 2 {
		t.Fatalf("FindProvidersAsync(unknown) = %v, want [d1 d2] without self", ps)
	}
	// The DHT's answer is now in the table.
	if ps := tb.Providers(unknown, 0); len(ps) != 2 {
		t.Fatalf("Providers after fallback = %v, want 2", ps)
	}
	if s := tb.Stats(); s.Lookups != 2 || s.Fallback != 1 {
		t.Fatalf("Stats = %+v, want 2 lookups, 1 fallback", s)
	}
}

func TestTableFallbackEndsOnCancelAndClose(t *testing.T) {
	f := &fakeFinder{asked: make(chan cid.Cid, 10), block: true}
	tb := NewTable(TableConfig{Fallback: f})
	ctx, cancel := context.WithCancel(t.Context())
	ch := tb.FindProvidersAsync(ctx, testCid(t, cid.Raw, "x"), 1)
	<-f.asked
	cancel()
	if ps := collect(ch); len(ps) != 0 {
		t.Fatalf("got %v from a cancelled lookup", ps)
	}
	ch = tb.FindProvidersAsync(t.Context(), testCid(t, cid.Raw, "y"), 1)
	<-f.asked
	sub := tb.Subscribe(t.Context())
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	collect(ch) // closed by Close
	for range sub {
	}
	if err := tb.Close(); err == nil {
		t.Fatal("second Close = nil, want ErrClosed")
	}
}

func TestTableSubscribe(t *testing.T) {
	tb := NewTable(TableConfig{MaxEntries: 1})
	defer tb.Close()
	sub := tb.Subscribe(t.Context())
	r1, r2 := testCid(t, cid.Raw, "1"), testCid(t, cid.Raw, "2")
	tb.Add("p", time.Minute, r1)
	tb.Add("p", time.Minute, r2) // evicts r1
	want := []Change{
		{Root: r1, Peer: "p", Added: true, Source: FromCaller},
		{Root: r1, Peer: "p"},
		{Root: r2, Peer: "p", Added: true, Source: FromCaller},
	}
	for i, w := range want {
		if got := <-sub; got != w {
			t.Fatalf("change %d = %+v, want %+v", i, got, w)
		}
	}
}
