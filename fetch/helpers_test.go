package fetch_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

const MiB = 1 << 20

// newHost starts a libp2p host listening on loopback TCP only.
func newHost(t testing.TB) host.Host { return hostWith(t) }

// newHostKey is newHost with the identity key k.
func newHostKey(t testing.TB, k crypto.PrivKey) host.Host { return hostWith(t, libp2p.Identity(k)) }

func hostWith(t testing.TB, opts ...libp2p.Option) host.Host {
	t.Helper()
	h, err := libp2p.New(append([]libp2p.Option{
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay(),
		libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
	}, opts...)...)
	if err != nil {
		t.Fatalf("libp2p.New: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newStore(t testing.TB, quota int64) *store.Store {
	t.Helper()
	s, err := store.New(store.Config{InMemory: true, Quota: quota})
	if err != nil {
		t.Fatalf("store.New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// node is a host, a store and a fetcher on them.
type node struct {
	h     host.Host
	st    *store.Store
	f     *fetch.Fetcher
	plain fetch.Store // set on benchmark nodes that run on a plain blockstore
}

func newNode(t testing.TB, cfg fetch.Config) *node {
	t.Helper()
	return nodeOn(t, newHost(t), cfg)
}

// nodeOn is newNode on a host made before (whose ID others' configs name).
func nodeOn(t testing.TB, h host.Host, cfg fetch.Config) *node {
	t.Helper()
	n := &node{h: h}
	switch s := cfg.Store.(type) {
	case nil:
		n.st = newStore(t, -1)
		cfg.Store = n.st
	case *pausingStore:
		n.st = s.Store
	default:
		n.st = s.(*store.Store)
	}
	cfg.Host = n.h
	if cfg.ServeBytesPerSecond == 0 {
		cfg.ServeBytesPerSecond = -1
	}
	f, err := fetch.New(cfg)
	if err != nil {
		t.Fatalf("fetch.New: %v", err)
	}
	n.f = f
	t.Cleanup(func() { f.Close() })
	return n
}

func (n *node) info() peer.AddrInfo { return peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()} }

// asset is test content: its bytes and its Target (without URL).
type asset struct {
	data []byte
	t    fetch.Target
}

func makeAsset(t testing.TB, seed uint64, size int64) asset {
	t.Helper()
	data := testutil.Bytes(seed, size)
	s := newStore(t, -1)
	ctx := context.Background()
	c, err := s.Import(ctx, bytes.NewReader(data), store.ImportOptions{})
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	nodes, err := store.InnerNodes(ctx, s, c.Root)
	if err != nil {
		t.Fatalf("InnerNodes: %v", err)
	}
	return asset{data: data, t: fetch.Target{Cid: c.Root, Size: c.Size, Nodes: nodes}}
}

// hold imports the asset into n's store.
func (n *node) hold(t testing.TB, a asset) {
	t.Helper()
	c, err := n.st.Import(context.Background(), bytes.NewReader(a.data), store.ImportOptions{})
	if err != nil || !c.Root.Equals(a.t.Cid) {
		t.Fatalf("Import = %v, %v; want %v", c.Root, err, a.t.Cid)
	}
}

// holdLeaves puts a's inner nodes and its first k leaves into n's store.
func (n *node) holdLeaves(t testing.TB, a asset, k int) {
	t.Helper()
	n.holdLeavesIf(t, a, func(i int) bool { return i < k })
}

// holdLeavesIf puts a's inner nodes and the leaves i for which keep(i)
// into n's store.
func (n *node) holdLeavesIf(t testing.TB, a asset, keep func(i int) bool) {
	t.Helper()
	ctx := context.Background()
	leaves, err := store.Leaves(ctx, nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range a.t.Nodes {
		if err := n.st.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	for i, l := range leaves {
		if !keep(i) {
			continue
		}
		b, err := blocks.NewBlockWithCid(a.data[l.Offset:l.Offset+l.Size], l.Cid)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.st.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
}

// providers is a routing.ContentDiscovery test double: a fixed table.
type providers map[cid.Cid][]peer.AddrInfo

func (p providers) FindProvidersAsync(ctx context.Context, c cid.Cid, n int) <-chan peer.AddrInfo {
	ch := make(chan peer.AddrInfo, len(p[c]))
	for _, ai := range p[c] {
		ch <- ai
	}
	close(ch)
	return ch
}

// origin is an httptest origin serving one file with Range support (or,
// made by newWholeOrigin, answering every request with the whole file). It
// counts the bytes it sends, can be paced, held and killed.
type origin struct {
	*httptest.Server
	data    []byte
	noRange bool // every request answered 200 with the whole file
	sent    atomic.Int64
	reqs    atomic.Int64
	limit   *rate.Limiter   // nil: no pacing
	dieAt   atomic.Int64    // after this many requests, cut all (0: never; <0: from the start)
	hold    <-chan struct{} // nil: answer at once; else answer once it is closed
	asked   chan struct{}   // nil, or closed at the first request (set before the first)
	once    sync.Once
}

func newOrigin(t testing.TB, data []byte) *origin {
	t.Helper()
	return startOrigin(t, &origin{data: data})
}

// newWholeOrigin is an origin that ignores Range, as python's http.server
// does: every answer is 200 with the whole file.
func newWholeOrigin(t testing.TB, data []byte) *origin {
	t.Helper()
	return startOrigin(t, &origin{data: data, noRange: true})
}

// startOrigin serves o until the test ends.
func startOrigin(t testing.TB, o *origin) *origin {
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.Close)
	return o
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request) {
	n := o.reqs.Add(1)
	if o.asked != nil {
		o.once.Do(func() { close(o.asked) })
	}
	if d := o.dieAt.Load(); d < 0 || d > 0 && n > d {
		panic(http.ErrAbortHandler) // the connection is cut
	}
	if o.hold != nil {
		select {
		case <-o.hold:
		case <-r.Context().Done():
			return
		}
	}
	start, end := int64(0), int64(len(o.data))
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !o.noRange {
		var a, b int64
		if _, err := fmt.Sscanf(rg, "bytes=%d-%d", &a, &b); err != nil || a >= end {
			http.Error(w, "bad range", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, end = a, min(b+1, end)
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, len(o.data)))
	}
	w.Header().Set("Content-Length", strconv.FormatInt(end-start, 10))
	w.WriteHeader(status)
	body := o.data[start:end]
	for len(body) > 0 {
		k := min(len(body), 64<<10)
		if o.limit != nil {
			if err := o.limit.WaitN(r.Context(), k); err != nil {
				return
			}
		}
		m, err := w.Write(body[:k])
		o.sent.Add(int64(m))
		if err != nil {
			return
		}
		body = body[k:]
	}
}

func readAll(t testing.TB, r *fetch.Reader) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf.Bytes()
}

func checkBytes(t testing.TB, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("got %d bytes, want %d; first difference at %d", len(got), len(want), i)
	}
}

// waitStored waits for the store to name root as held content.
func waitStored(t testing.TB, st *store.Store, root cid.Cid) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := st.Subscribe(ctx)
	if st.Holds(root) {
		return
	}
	for e := range ev {
		if e.Root.Equals(root) {
			return
		}
	}
	t.Fatalf("store never held %s", root)
}

// cidFromPath parses /ipfs/CID.
func cidFromPath(p string) (cid.Cid, error) {
	return cid.Decode(strings.TrimPrefix(p, "/ipfs/"))
}

// open opens tg on n's Fetcher, failing t if it cannot, and closes the
// Reader when t ends.
func (n *node) open(t testing.TB, tg fetch.Target) *fetch.Reader {
	t.Helper()
	r, err := n.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// fetchWhole fetches tg through n to the end, checks the bytes against
// want, closes the Reader, and returns its Stats.
func (n *node) fetchWhole(t testing.TB, tg fetch.Target, want []byte) fetch.Stats {
	t.Helper()
	r := n.open(t, tg)
	checkBytes(t, readAll(t, r), want)
	st := r.Stats()
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	return st
}
