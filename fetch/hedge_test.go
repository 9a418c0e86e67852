package fetch_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// TestSlowPeer: a provider capped at 1/10 of the origin's rate. The origin
// joins as soon as the peer shows itself slower than the origin, so the
// slow peer gives only a small share of the file (what it can send at its
// rate in about the origin's time), and its blocks are still counted. The
// time against origin-only is logged, not asserted: it measures the
// machine as much as the policy (BenchmarkThroughput and the bench program
// measure speed).
func TestSlowPeer(t *testing.T) {
	const originRate = 8 * MiB
	a := makeAsset(t, 30, 12*MiB)
	prov := newNode(t, fetch.Config{ServeBytesPerSecond: originRate / 10})
	prov.hold(t, a)
	o := newOrigin(t, a.data)
	tg := a.t
	tg.URL = o.URL

	fetchTime := func(cfg fetch.Config) (time.Duration, fetch.Stats) {
		o.limit = rate.NewLimiter(originRate, 64<<10)
		cl := newNode(t, cfg)
		start := time.Now()
		st := cl.fetchWhole(t, tg, a.data)
		return time.Since(start), st
	}
	originOnly, _ := fetchTime(fetch.Config{})
	hedged, st := fetchTime(fetch.Config{Providers: providers{a.t.Cid: {prov.info()}}})
	ratio := float64(hedged) / float64(originOnly)
	t.Logf("origin only %v, with the slow peer %v (%.2fx); peer %d bytes, origin %d, duplicate %d",
		originOnly, hedged, ratio, st.PeerBytes, st.OriginBytes, st.DuplicateBytes)
	// Both sources are paced by rate limiters, so the peer's share does not
	// depend on the machine's load: about 1/11 when the origin joins at
	// once; a fetch that waited on the peer (a late hedge, or none) takes
	// far more from it.
	if total := st.PeerBytes + st.OriginBytes; st.PeerBytes*4 > total {
		t.Errorf("the slow peer gave %d of %d bytes, want at most a quarter: the origin joined late", st.PeerBytes, total)
	}
	if st.PeerBytes == 0 || !st.Hedged {
		t.Errorf("Stats = %+v, want the peer's blocks counted and the fetch hedged", st)
	}
}

// TestServingCaps: a peer capped at 5 MiB/s serves no faster when 10
// clients ask at once.
func TestServingCaps(t *testing.T) {
	const capRate = 5 * MiB
	a := makeAsset(t, 31, 3*MiB/2)
	prov := newNode(t, fetch.Config{ServeBytesPerSecond: capRate, ServeConcurrency: 4})
	prov.hold(t, a)
	clients := make([]*node, 10)
	for i := range clients {
		clients[i] = newNode(t, fetch.Config{StallTimeout: 30 * time.Second,
			Providers: providers{a.t.Cid: {prov.info()}}})
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for _, cl := range clients {
		wg.Go(func() {
			r, err := cl.f.Open(context.Background(), a.t)
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			checkBytes(t, readAll(t, r), a.data)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Open: %v", err)
	}
	elapsed := time.Since(start)
	served := prov.f.Stats().ServedBytes
	// The limiter lets one block (1 MiB) through at once; after that the
	// rate holds.
	got := float64(served-MiB) / elapsed.Seconds()
	t.Logf("served %d bytes to 10 clients in %v: %.2f MiB/s (cap 5 MiB/s)", served, elapsed, got/MiB)
	if served < 10*int64(len(a.data)) {
		t.Errorf("served %d bytes, want at least %d", served, 10*len(a.data))
	}
	if got > capRate*1.02 {
		t.Errorf("served at %.2f MiB/s, want <= 5", got/MiB)
	}
}

// TestPeerSlowerThanOrigin: a peer at a quarter of the origin's rate
// delivers often enough never to stall, yet the reader waits on it: once
// the origin's rate is known (from an earlier fetch), the origin joins.
func TestPeerSlowerThanOrigin(t *testing.T) {
	const originRate = 32 * MiB
	warm := makeAsset(t, 32, 2*MiB)
	a := makeAsset(t, 33, 16*MiB)
	prov := newNode(t, fetch.Config{ServeBytesPerSecond: originRate / 4})
	prov.hold(t, a)
	ow := newOrigin(t, warm.data)
	o := newOrigin(t, a.data)
	o.limit = rate.NewLimiter(originRate, 64<<10)
	ow.limit = rate.NewLimiter(originRate, 64<<10)
	// A long peer timeout: only the rate comparison can bring the origin in.
	cl := newNode(t, fetch.Config{PeerTimeout: 5 * time.Second, Providers: providers{a.t.Cid: {prov.info()}}})

	// An origin-only fetch first: the Fetcher learns the origin's rate.
	tw := warm.t
	tw.URL = ow.URL
	cl.fetchWhole(t, tw, warm.data)

	tg := a.t
	tg.URL = o.URL
	start := time.Now()
	st := cl.fetchWhole(t, tg, a.data)
	took := time.Since(start)
	peerOnly := time.Duration(float64(len(a.data)) / (originRate / 4) * float64(time.Second))
	t.Logf("took %v (peer alone would take about %v); peer %d bytes, origin %d", took, peerOnly, st.PeerBytes, st.OriginBytes)
	if !st.Hedged || st.OriginBytes == 0 || st.PeerBytes == 0 {
		t.Errorf("Stats = %+v, want hedged with bytes from both", st)
	}
	// How much sooner it ends depends on the machine's load; the rule is
	// what is checked here (without it: no origin bytes, about peerOnly).
}

// TestBusyHolderNotHedged: a holder that has just served this node and
// is slow to send the first block of the next content (it serves 2 MiB/s
// and has just sent a 1 MiB leaf, so the next takes about 0.5 s) is given
// the origin's time for a leaf (1 s until the origin is measured) besides
// PeerTimeout: the origin, asked at PeerTimeout, would bring the
// leaf no sooner, and in a crowd it is shared. The origin is not asked. A
// node with no such history asks it at PeerTimeout (the hedge that made
// every node of a crowd beside a busy seed fetch from the origin).
//
// The holder's pace puts its next block halfway between the two
// deadlines (0.2 s and 1.2 s): the token bucket makes it no sooner than
// 0.5 s after the last, and a loaded machine under -race has 0.7 s to
// spare (1.5 MiB/s, leaving 0.5 s, failed once in CI). A machine loaded
// past that (CI under -race: the block after 1.2 s, 2 runs in 10 once)
// sees the origin asked at the longer deadline, which is the rule too:
// only a hedge sooner fails.
//
// The holder answers want-haves through boxo's queue only and serves
// every block in its cap's turn, as Kubo does: a meshcdn holder's HAVE
// comes at once (haves.go), and a node that heard it waits for the block
// whatever its history; and it sends a reader's first block ahead of its
// cap's queue (urgent.go), here at once.
func TestBusyHolderNotHedged(t *testing.T) {
	warm, next := makeAsset(t, 40, MiB), makeAsset(t, 41, MiB)
	o := newOrigin(t, next.data)
	tg := next.t
	tg.URL = o.URL
	// fetchBoth fetches warm (by from, which drains the holder's one-leaf
	// burst) and then next (by cl) from a new holder.
	var provs map[*node]providers // each client's providers, filled in as it asks
	fetchBoth := func(from, cl *node) fetch.Stats {
		holder := newNode(t, fetch.Config{ServeBytesPerSecond: 2 * MiB})
		holder.f.AnswerHavesInQueue() // its HAVE comes late when it is busy
		holder.f.ServeInTurn()        // and its first block
		holder.hold(t, warm)
		holder.hold(t, next)
		for _, n := range []*node{from, cl} {
			if err := n.h.Connect(context.Background(), holder.info()); err != nil {
				t.Fatal(err)
			}
		}
		ask := func(n *node, a asset, tg fetch.Target) fetch.Stats {
			provs[n][a.t.Cid] = []peer.AddrInfo{holder.info()}
			return n.fetchWhole(t, tg, a.data)
		}
		ask(from, warm, warm.t)
		return ask(cl, next, tg)
	}
	provs = map[*node]providers{}
	newClient := func() *node {
		p := providers{}
		n := newNode(t, fetch.Config{Providers: p})
		provs[n] = p
		return n
	}
	// The control: a node with no history hedges at PeerTimeout, unless
	// the holder's HAVE of the leaf came first (then it is on its way, and
	// the node rightly waits as long: about one run in five under -race).
	// Up to five tries, each with a new holder, to see the hedge.
	var st fetch.Stats
	for range 5 {
		st = fetchBoth(newClient(), newClient())
		t.Logf("no history with the holder: TTFB %v, origin %d, peer %d, hedged %v", st.TTFB, st.OriginBytes, st.PeerBytes, st.Hedged)
		if st.Hedged {
			break
		}
	}
	if !st.Hedged {
		t.Fatalf("a node with no history did not hedge in five tries (the last first block took %v): the test shows nothing", st.TTFB)
	}
	cl := newClient()
	before := o.reqs.Load()
	st = fetchBoth(cl, cl)
	t.Logf("just served by the holder: TTFB %v, origin %d, peer %d, hedged %v", st.TTFB, st.OriginBytes, st.PeerBytes, st.Hedged)
	// A machine loaded enough to hold the holder's block past the longer
	// deadline (CI under -race once saw 1.207 s) has the origin rightly
	// asked then: what is checked is that it was not asked sooner.
	longer := fetch.DefaultPeerTimeout + time.Second // PeerTimeout + the origin's assumed time for a leaf
	switch {
	case st.Hedged && st.TTFB < longer:
		t.Errorf("a holder that had just served this node was hedged before PeerTimeout plus the origin's time for a leaf (%v): Stats %+v", longer, st)
	case st.Hedged:
		t.Logf("the holder's block came after %v: the origin was asked at the longer deadline, as it should be", longer)
	case o.reqs.Load() != before || st.PeerBytes != MiB:
		t.Errorf("not hedged, yet the origin was asked %d times or the peer did not send the leaf: Stats %+v", o.reqs.Load()-before, st)
	}
}

// TestBusyHolderHedgedPerLeaf: a holder that has just served this node
// sends a 12 MiB asset at 3 MiB/s, a leaf every third of a second, to a
// reader that reads as fast as it can; an idle origin is faster. The
// reader waits on each leaf longer than PeerTimeout, but the holder is
// serving, not gone: the origin hedges single leaves the reader has waited
// on for long (hedgeLeaf) rather than taking the rest of the file. Before,
// the origin joined at the first wait over PeerTimeout and took most of
// the leaves while the holder sent them too.
func TestBusyHolderHedgedPerLeaf(t *testing.T) {
	// A holder that, on a loaded machine, sends nothing for hedgeWait
	// before the reader knows its pace (800 ms after its first leaf) has
	// stalled as far as the fetch can tell, and the origin rightly takes
	// over (takesOver): such a run shows nothing of per-leaf hedging, and
	// another is made (a CI run under -race saw it; 2 runs in 10 with both
	// cores kept busy besides). Every run taking over fails. A fresh-clone
	// CI of 2026-12-06 saw 3 of 3 take over under its parallel package
	// load; alone under -race, the first run of the process took over in 5
	// of 24 processes, a second never.
	const tries = 5
	for try := range tries {
		sent, size, tookOver := busyHolderFetch(t)
		if tookOver {
			t.Logf("run %d: the holder was silent long enough for the origin to take over; running again", try+1)
			continue
		}
		// At 3 MiB/s the holder never leaves the reader waiting four
		// times its pace; a loaded machine may delay a leaf or two that
		// long.
		if sent > 3*MiB {
			t.Errorf("the origin sent %d bytes of a %d-byte file the holder was serving, want at most 3 MiB: it took leaves the holder was sending", sent, size)
		}
		return
	}
	t.Errorf("in each of %d runs the holder serving at 3 MiB/s went silent long enough for the origin to take over", tries)
}

// busyHolderFetch is one run of TestBusyHolderHedgedPerLeaf: what the
// origin sent, the file's size, and whether the origin took over from
// hedging.
func busyHolderFetch(t *testing.T) (sent int64, size int, tookOver bool) {
	t.Helper()
	warm, a := makeAsset(t, 42, MiB), makeAsset(t, 43, 12*MiB)
	holder := newNode(t, fetch.Config{ServeBytesPerSecond: 3 * MiB})
	holder.hold(t, warm)
	holder.hold(t, a)
	o := newOrigin(t, a.data)
	o.limit = rate.NewLimiter(32*MiB, 64<<10)
	logs := &msgCounter{msg: "origin takes over from hedging"}
	cl := newNode(t, fetch.Config{Providers: providers{warm.t.Cid: {holder.info()}, a.t.Cid: {holder.info()}}, Logger: slog.New(logs)})
	cl.fetchWhole(t, warm.t, warm.data)

	tg := a.t
	tg.URL = o.URL
	start := time.Now()
	st := cl.fetchWhole(t, tg, a.data)
	t.Logf("took %v: peer %d bytes, origin %d (sent %d, %d requests)", time.Since(start), st.PeerBytes, st.OriginBytes, o.sent.Load(), o.reqs.Load())
	return o.sent.Load(), len(a.data), logs.n.Load() > 0
}

// msgCounter is a slog.Handler that counts the records whose message is
// msg, at any level, and whose "peer" attribute is peer if that is set.
type msgCounter struct {
	msg  string
	peer string
	n    atomic.Int64
}

func (h *msgCounter) Enabled(context.Context, slog.Level) bool { return true }

func (h *msgCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message != h.msg {
		return nil
	}
	match := h.peer == ""
	r.Attrs(func(a slog.Attr) bool {
		match = match || a.Key == "peer" && a.Value.String() == h.peer
		return !match
	})
	if match {
		h.n.Add(1)
	}
	return nil
}

func (h *msgCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *msgCounter) WithGroup(string) slog.Handler      { return h }

// TestHolderResumesAfterPause: a holder serving a fetch stops sending
// blocks for 2 s (answering HAVEs all along), long enough for the hedging
// origin to take over, and then sends again at its cap. Once it does, the
// origin goes back to hedging single leaves (hedgesAgain) instead of
// taking every leaf for the rest of the fetch while the holder sends them
// too: a busy seed that paused once had its readers take the rest of their
// files from the origin.
func TestHolderResumesAfterPause(t *testing.T) {
	const size = 40 * MiB
	warm, a := makeAsset(t, 44, MiB), makeAsset(t, 45, size)
	ps := newPausingStore(t)
	holder := newNode(t, fetch.Config{Store: ps, ServeBytesPerSecond: 12 * MiB})
	holder.hold(t, warm)
	holder.hold(t, a)
	o := newOrigin(t, a.data)
	o.limit = rate.NewLimiter(8*MiB, 64<<10)
	cl := newNode(t, fetch.Config{Providers: providers{warm.t.Cid: {holder.info()}, a.t.Cid: {holder.info()}}})
	cl.fetchWhole(t, warm.t, warm.data) // the holder serves this node

	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	defer r.Close()
	head := make([]byte, 6*MiB)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	ps.pause()
	resumed := time.AfterFunc(2*time.Second, ps.resume)
	defer resumed.Stop()
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, append(head, rest...), a.data)
	st := r.Stats()
	t.Logf("peer %d MiB, origin %d MiB (sent %d MiB, %d requests)", st.PeerBytes/MiB, st.OriginBytes/MiB, o.sent.Load()/MiB, o.reqs.Load())
	if !st.Hedged || st.OriginBytes == 0 {
		t.Fatalf("the origin took nothing while the holder paused: Stats %+v; the test shows nothing", st)
	}
	// While the holder pauses (after the origin takes over, about 1 s
	// in), the origin may take what 8 MiB/s brings; once the holder sends
	// again, only leaves hedged one at a time: 12 MiB sent here. Taking
	// every leaf after the pause, it sent 24 MiB in 34 requests, most of
	// them cut off as the holder's copies came first.
	if sent := o.sent.Load(); sent > 18*MiB {
		t.Errorf("the origin sent %d MiB of a %d MiB file whose holder paused for 2 s and then served at 12 MiB/s: it went on taking every leaf", sent/MiB, size/MiB)
	}
}

// pausingStore is a node's store whose block reads (what serving peers
// takes) wait while it is paused; HAVEs are still answered.
type pausingStore struct {
	*store.Store
	mu   sync.Mutex
	open chan struct{} // closed while not paused
}

func newPausingStore(t testing.TB) *pausingStore {
	open := make(chan struct{})
	close(open)
	return &pausingStore{Store: newStore(t, -1), open: open}
}

func (s *pausingStore) pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open = make(chan struct{})
}

func (s *pausingStore) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.open)
}

func (s *pausingStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Store.Get(ctx, c)
}

// GetForPeer is the read serving takes (store.Store.GetForPeer).
func (s *pausingStore) GetForPeer(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Store.GetForPeer(ctx, c)
}

func (s *pausingStore) wait(ctx context.Context) error {
	s.mu.Lock()
	open := s.open
	s.mu.Unlock()
	select {
	case <-open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestOriginCapacityMeasured: the origin's capacity for a fetch, against
// which peers count as slower than it (slowerThanOrigin), is what its
// requests gave together: a lone request's rate when they ran one at a
// time, not that times OriginConcurrency, and the shared link's rate when
// they ran four at once. An origin behind a 16 MiB/s link was once taken
// for 64 MiB/s after lone requests, and peers sending 20 MiB/s counted as
// slow.
func TestOriginCapacityMeasured(t *testing.T) {
	const link = 16 * MiB
	lone, wide := makeAsset(t, 46, MiB), makeAsset(t, 47, 12*MiB)
	cl := newNode(t, fetch.Config{})
	within := func(what string) {
		t.Helper()
		got := cl.f.OriginCapacity()
		t.Logf("%s: capacity %.1f MiB/s", what, got/MiB)
		if got < link/3 || got > 1.5*link {
			t.Errorf("%s: the origin's capacity taken for %.1f MiB/s, want about the link's %d", what, got/MiB, link/MiB)
		}
	}
	for range 3 {
		o := newOrigin(t, lone.data)
		o.limit = rate.NewLimiter(link, 64<<10)
		tg := lone.t
		tg.URL = o.URL
		cl.fetchWhole(t, tg, lone.data)
		if err := cl.st.Remove(context.Background(), lone.t.Cid); err != nil {
			t.Fatal(err)
		}
	}
	within("three one-leaf fetches, one request each")
	o := newOrigin(t, wide.data)
	o.limit = rate.NewLimiter(link, 64<<10)
	tg := wide.t
	tg.URL = o.URL
	cl.fetchWhole(t, tg, wide.data)
	within("a 12-leaf fetch, its requests sharing the link")
}

// TestOutOfOrderNotSkipped: the reader's leaves come from two holders,
// one quick that holds the odd leaves and one at 4 MiB/s that holds the
// even ones, so later leaves keep arriving while the reader waits on an
// even one. That is no sign that the slow holder dropped the leaf (only a
// later leaf from a peer asked for the reader's counts: skippedLocked), so
// the origin waits the serving holder's full hedge time (hedgeWait) before
// it takes a leaf, and the holder, a leaf every quarter second, is rarely
// hedged. Counted as skipped, the origin took most even leaves.
func TestOutOfOrderNotSkipped(t *testing.T) {
	warm, a := makeAsset(t, 48, MiB), makeAsset(t, 49, 16*MiB)
	slow := newNode(t, fetch.Config{ServeBytesPerSecond: 4 * MiB})
	slow.hold(t, warm)
	slow.holdLeavesIf(t, a, func(i int) bool { return i%2 == 0 })
	quick := newNode(t, fetch.Config{})
	quick.holdLeavesIf(t, a, func(i int) bool { return i%2 == 1 })
	o := newOrigin(t, a.data)
	o.limit = rate.NewLimiter(32*MiB, 64<<10)
	cl := newNode(t, fetch.Config{Providers: providers{warm.t.Cid: {slow.info()}, a.t.Cid: {slow.info(), quick.info()}}})
	cl.fetchWhole(t, warm.t, warm.data) // the slow holder serves this node

	tg := a.t
	tg.URL = o.URL
	st := cl.fetchWhole(t, tg, a.data)
	t.Logf("peers %v, origin %d MiB (sent %d MiB, %d requests), took %v", st.Peers, st.OriginBytes/MiB, o.sent.Load()/MiB, o.reqs.Load(), st.TTLB)
	if st.Peers[slow.h.ID()] == 0 || st.Peers[quick.h.ID()] == 0 {
		t.Fatalf("peers %v: want leaves from both holders; the test shows nothing", st.Peers)
	}
	if n := o.reqs.Load(); n > 3 {
		t.Errorf("the origin was asked for %d leaves of 16 while a holder sent one every quarter second: later leaves from another peer counted as the leaf skipped", n)
	}
}
