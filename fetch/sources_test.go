package fetch_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// TestDyingSources: the origin dies mid-transfer while a peer holds the
// rest, and a peer dies mid-transfer while the origin is up: both complete
// with correct bytes. With both dead, a typed error, and the blocks fetched
// so far kept.
func TestDyingSources(t *testing.T) {
	t.Run("origin dies", dyingOrigin)
	t.Run("peer dies", dyingPeer)
	t.Run("both die", dyingBoth)
}

// dyingOrigin: the origin dies after two leaves while a slow peer holds
// the rest: the fetch completes from both, counting the origin's errors.
func dyingOrigin(t *testing.T) {
	a := makeAsset(t, 10, 6*MiB)
	// A slow provider: the origin joins, then dies after two leaves.
	// After its first block (its burst) the provider keeps the reader
	// waiting a second a leaf, longer than the origin lets it wait
	// before hedging one (hedgeLeaf: two PeerTimeouts, 200 ms here,
	// while its pace is unknown); once the origin's rate is measured,
	// the provider is slower than it and the origin hedges each leaf
	// the reader waits on.
	prov := newNode(t, fetch.Config{ServeBytesPerSecond: MiB})
	prov.hold(t, a)
	o := newOrigin(t, a.data)
	o.dieAt.Store(2)
	cl := newNode(t, fetch.Config{PeerTimeout: 100 * time.Millisecond, Providers: providers{a.t.Cid: {prov.info()}}})
	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	checkBytes(t, readAll(t, r), a.data)
	st := r.Stats()
	t.Logf("peer %d origin %d origin errors %d", st.PeerBytes, st.OriginBytes, st.OriginErrors)
	if st.PeerBytes == 0 || st.OriginBytes == 0 || st.OriginErrors == 0 {
		t.Errorf("Stats = %+v, want bytes from both and origin errors", st)
	}
}

// dyingPeer: the peer dies after the first leaf while the origin is up:
// the rest comes from the origin.
func dyingPeer(t *testing.T) {
	a := makeAsset(t, 11, 8*MiB)
	prov := newNode(t, fetch.Config{ServeBytesPerSecond: MiB})
	prov.hold(t, a)
	o := newOrigin(t, a.data)
	cl := newNode(t, fetch.Config{PeerTimeout: time.Second, Providers: providers{a.t.Cid: {prov.info()}}})
	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	head := make([]byte, MiB)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatalf("read first leaf: %v", err)
	}
	prov.f.Close()
	prov.h.Close()
	rest := readAll(t, r)
	checkBytes(t, append(head, rest...), a.data)
	st := r.Stats()
	t.Logf("peer %d origin %d", st.PeerBytes, st.OriginBytes)
	if st.PeerBytes < MiB || st.OriginBytes == 0 {
		t.Errorf("Stats = %+v, want the first leaf from the peer and the rest from the origin", st)
	}
}

// dyingBoth: the peer dies with the origin dead: ErrUnavailable, and the
// leaf fetched so far is kept.
func dyingBoth(t *testing.T) {
	a := makeAsset(t, 12, 5*MiB)
	// The peer holds the first two leaves only and dies after the
	// first is read: whatever the timing, the rest can come from
	// nowhere.
	prov := newNode(t, fetch.Config{})
	prov.holdLeaves(t, a, 2)
	o := newOrigin(t, a.data)
	o.dieAt.Store(-1) // every request is cut
	cl := newNode(t, fetch.Config{StallTimeout: 1500 * time.Millisecond,
		Providers: providers{a.t.Cid: {prov.info()}}})
	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	head := make([]byte, MiB)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatalf("read first leaf: %v", err)
	}
	prov.f.Close()
	prov.h.Close()
	_, err := io.ReadAll(r)
	if !errors.Is(err, fetch.ErrUnavailable) {
		t.Fatalf("Read after both died = %v, want ErrUnavailable", err)
	}
	leaves, lerr := store.Leaves(context.Background(), nodesGetter(a.t), a.t.Cid, a.t.Size)
	if lerr != nil {
		t.Fatal(lerr)
	}
	if has, _ := cl.st.Has(context.Background(), leaves[0].Cid); !has {
		t.Errorf("first leaf not kept after the failure")
	}
	t.Logf("error: %v", err)
}

// TestLeafRefusedByHolder: the only provider holds every leaf but one (a
// holder that dropped a damaged block) and answers DONT_HAVE of it; the
// origin takes that leaf, and only it, at once rather than after the peer
// timeout the reader would give a holder that says nothing.
func TestLeafRefusedByHolder(t *testing.T) {
	a := makeAsset(t, 13, 6*MiB)
	prov := newNode(t, fetch.Config{})
	prov.holdLeavesIf(t, a, func(i int) bool { return i != 2 })
	o := newOrigin(t, a.data)
	const peerTimeout = 5 * time.Second
	cl := newNode(t, fetch.Config{PeerTimeout: peerTimeout, StallTimeout: 4 * peerTimeout,
		Providers: providers{a.t.Cid: {prov.info()}}})
	tg := a.t
	tg.URL = o.URL
	start := time.Now()
	r := cl.open(t, tg)
	checkBytes(t, readAll(t, r), a.data)
	took := time.Since(start)
	st := r.Stats()
	t.Logf("took %v; peer %d origin %d", took, st.PeerBytes, st.OriginBytes)
	if st.OriginBytes != MiB || st.PeerBytes != a.t.Size-MiB {
		t.Errorf("Stats = %+v, want the refused leaf (1 MiB) from the origin and the rest from the peer", st)
	}
	if took >= peerTimeout {
		t.Errorf("the fetch took %v: the origin waited out the peer timeout (%v) for the refused leaf", took, peerTimeout)
	}
}

// TestLeafRefusedByFetcher: the only provider is a crowd member still
// fetching the content, and answers DONT_HAVE of a leaf it has yet to
// fetch. Once it has the leaf and moves from the fetchers to the holders,
// its refusal is not taken for a holder's (TestLeafRefusedByHolder): the
// origin is not asked for the leaf, which the peer sends as it gets it. A
// suite run's TestColdFetchCollapses saw the origin asked for 5 such
// leaves, sending 1.2 copies.
func TestLeafRefusedByFetcher(t *testing.T) {
	a := makeAsset(t, 14, 6*MiB)
	prov := newNode(t, fetch.Config{})
	prov.holdLeavesIf(t, a, func(i int) bool { return i != 2 })
	o := newOrigin(t, a.data)
	fetching := &liveCrowd{ids: map[cid.Cid][]peer.ID{a.t.Cid: {prov.h.ID()}}}
	const peerTimeout = 8 * time.Second
	cl := newNode(t, fetch.Config{PeerTimeout: peerTimeout, StallTimeout: 4 * peerTimeout, NoStriping: true,
		Crowd: fetching, Providers: providers{a.t.Cid: {prov.info()}}})
	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	got := make(chan []byte, 1)
	go func() { got <- readAll(t, r) }()
	deadline := time.Now().Add(10 * time.Second)
	for !r.WaitsRefused() {
		if time.Now().After(deadline) {
			t.Fatal("the reader never waited on the leaf the fetcher refused")
		}
		time.Sleep(5 * time.Millisecond) // nothing signals a DONT_HAVE
	}
	// The provider is done (a holder now) before the reader has the leaf:
	// its bitswap server does not always tell a peer it answered
	// DONT_HAVE that it has the block now.
	fetching.set(a.t.Cid, nil)
	if r.JoinsRefused() {
		t.Error("the origin joins for the refusal of a peer seen fetching")
	}
	// It fetched the leaf from an origin of its own, as a crowd member
	// does, which tells its bitswap server.
	own := a.t
	own.URL = newOrigin(t, a.data).URL
	checkBytes(t, readAll(t, prov.open(t, own)), a.data)
	checkBytes(t, <-got, a.data)
	st := r.Stats()
	t.Logf("peer %d origin %d; the origin sent %d", st.PeerBytes, st.OriginBytes, o.sent.Load())
	if sent := o.sent.Load(); sent != 0 || st.PeerBytes != a.t.Size {
		t.Errorf("Stats = %+v and the origin sent %d bytes: want every leaf from the peer and nothing from the origin", st, sent)
	}
}

// liveCrowd is a Crowd whose fetchers a test changes as a fetch goes.
type liveCrowd struct {
	mu  sync.Mutex
	ids map[cid.Cid][]peer.ID
}

func (c *liveCrowd) Fetchers(root cid.Cid) []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ids[root])
}

func (c *liveCrowd) set(root cid.Cid, ps []peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids[root] = ps
}

// TestStreaming: on a 100 MiB asset the first byte reaches the caller before
// 10% of the file has been fetched; Seek to the middle fetches from there.
// The store's quota is 32 MiB: the fetch streams whole all the same.
func TestStreaming(t *testing.T) {
	const size = 100 * MiB
	a := makeAsset(t, 20, size)
	o := newOrigin(t, a.data)
	st := newStore(t, 32*MiB)
	cl := newNode(t, fetch.Config{Store: st})
	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	one := make([]byte, 1)
	if _, err := r.Read(one); err != nil {
		t.Fatalf("Read: %v", err)
	}
	sent := o.sent.Load()
	t.Logf("first byte after %v, origin had sent %d bytes (%.1f%%)", r.Stats().TTFB, sent, 100*float64(sent)/size)
	if sent >= size/10 || one[0] != a.data[0] {
		t.Errorf("first byte %#x after %d bytes sent, want %#x before %d", one[0], sent, a.data[0], size/10)
	}

	mid := int64(size / 2)
	if _, err := r.Seek(mid, io.SeekStart); err != nil {
		t.Fatalf("Seek: %v", err)
	}
	buf := make([]byte, MiB+100)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("read at the middle: %v", err)
	}
	checkBytes(t, buf, a.data[mid:mid+int64(len(buf))])
	window := int64(cl.f.Config().ReadAhead) * MiB
	t.Logf("after Seek to the middle and reading 1 MiB there, the origin had sent %d MiB in all", o.sent.Load()/MiB)
	if sent := o.sent.Load(); sent > 2*window+2*MiB {
		t.Errorf("after Seek to the middle the origin sent %d bytes, want at most %d (two windows)", sent, 2*window+2*MiB)
	}

	// Back to the start: the first leaves come again (from the store or
	// the origin).
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		t.Fatalf("Seek: %v", err)
	}
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("read at the start: %v", err)
	}
	checkBytes(t, buf, a.data[:len(buf)])
}

// TestStreamingFromPeer: the same first-byte bound when a peer serves the
// 100 MiB asset: the blocks come in the order the reader needs them.
func TestStreamingFromPeer(t *testing.T) {
	const size = 100 * MiB
	a := makeAsset(t, 23, size)
	prov := newNode(t, fetch.Config{})
	prov.hold(t, a)
	cl := newNode(t, fetch.Config{Store: newStore(t, 32*MiB), Providers: providers{a.t.Cid: {prov.info()}}})
	r, err := cl.f.Open(context.Background(), a.t)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	one := make([]byte, 1)
	if _, err := r.Read(one); err != nil {
		t.Fatalf("Read: %v", err)
	}
	served := prov.f.Stats().ServedBytes
	t.Logf("first byte after %v, the peer had read %d MiB for sending (%.1f%%)", r.Stats().TTFB, served/MiB, 100*float64(served)/size)
	if served >= size/10 || one[0] != a.data[0] {
		t.Errorf("first byte %#x after %d bytes served, want %#x before %d", one[0], served, a.data[0], size/10)
	}
}

// TestOverQuota: a fetch larger than the store's quota streams whole; the
// store stays within its quota and the content is not named as held.
func TestOverQuota(t *testing.T) {
	a := makeAsset(t, 21, 12*MiB+5)
	o := newOrigin(t, a.data)
	st := newStore(t, 4*MiB)
	cl := newNode(t, fetch.Config{Store: st})
	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	checkBytes(t, readAll(t, r), a.data)
	if u := st.Usage(); u.Used > 4*MiB {
		t.Errorf("store holds %d bytes, over its 4 MiB quota", u.Used)
	}
	if st.Holds(a.t.Cid) {
		t.Errorf("store holds the content whole, want not (it does not fit)")
	}
}

// TestSharedOriginLoad: two fetches of one CID at once share the origin's
// leaf requests.
func TestSharedOriginLoad(t *testing.T) {
	a := makeAsset(t, 22, 4*MiB)
	o := newOrigin(t, a.data)
	o.limit = rate.NewLimiter(16*MiB, 64<<10)
	cl := newNode(t, fetch.Config{})
	tg := a.t
	tg.URL = o.URL
	var wg sync.WaitGroup
	for range 2 {
		r := cl.open(t, tg)
		wg.Go(func() { checkBytes(t, readAll(t, r), a.data) })
	}
	wg.Wait()
	if sent := o.sent.Load(); sent > int64(len(a.data))+MiB {
		t.Errorf("origin sent %d bytes for two fetches of %d, want them shared", sent, len(a.data))
	}
}

// TestConcurrentFetchNotStarved: a big fetch has its read-ahead window
// (32 leaves) asked of a peer capped at 8 MiB/s; a small asset opened
// after it must not wait behind that window: the peer sends the leaf each
// reader needs next first, whichever fetch asked first.
func TestConcurrentFetchNotStarved(t *testing.T) {
	big := makeAsset(t, 70, 40*MiB)
	small := makeAsset(t, 71, MiB/2)
	prov := newNode(t, fetch.Config{ServeBytesPerSecond: 8 * MiB})
	prov.hold(t, big)
	prov.hold(t, small)
	// No origin and a long peer timeout: only the peer can serve.
	cl := newNode(t, fetch.Config{PeerTimeout: time.Minute, StallTimeout: time.Minute,
		Providers: providers{big.t.Cid: {prov.info()}, small.t.Cid: {prov.info()}}})
	rb, err := cl.f.Open(context.Background(), big.t)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	one := make([]byte, 1)
	if _, err := rb.Read(one); err != nil { // the whole window is asked by now
		t.Fatal(err)
	}
	rs, err := cl.f.Open(context.Background(), small.t)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	checkBytes(t, readAll(t, rs), small.data)
	bigSoFar := rb.Stats().PeerBytes
	t.Logf("small asset read after %v; the big fetch had %d MiB of its 32 MiB window by then", rs.Stats().TTLB, bigSoFar/MiB)
	// What the peer already had in flight (MaxOutstandingBytesPerPeer,
	// 8 MiB) goes first.
	if bigSoFar > 16*MiB {
		t.Errorf("the small asset came after %d MiB of the big fetch's window, want it served before half of it (16 MiB)", bigSoFar/MiB)
	}
}
