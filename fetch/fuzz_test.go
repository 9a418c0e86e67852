package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

// forgetfulStore is a real store that keeps nothing fetched, so that every
// fuzz iteration goes to the origin again.
type forgetfulStore struct{ *store.Store }

func (forgetfulStore) Put(context.Context, blocks.Block) error       { return nil }
func (forgetfulStore) PutMany(context.Context, []blocks.Block) error { return nil }

// originReply is what the fuzzed origin answers to every request.
type originReply struct {
	status  int
	hdrKey  string
	hdrVal  string
	mode    byte // how the body is made: see body
	cut     int
	garbage []byte
}

// originHeaders are the header names the fuzzed origin may set.
var originHeaders = []string{"Content-Range", "Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding", "Location"}

// body is the reply's body to a request whose honest answer is honest, of
// the file whole.
func (o originReply) body(honest, whole []byte) []byte {
	c := min(o.cut, len(honest))
	switch o.mode % 7 {
	case 0:
		return o.garbage
	case 1: // one byte flipped
		b := bytes.Clone(honest)
		if len(b) > 0 {
			b[o.cut%len(b)] ^= 1
		}
		return b
	case 2: // cut short
		return honest[:c]
	case 3: // too long
		return append(bytes.Clone(honest), o.garbage...)
	case 4: // the garbage spliced in
		return append(append(bytes.Clone(honest[:c]), o.garbage...), honest[c:]...)
	case 6: // Range ignored
		return whole
	}
	return honest
}

// FuzzOriginResponse serves fuzzed statuses, headers and bodies (garbage,
// flipped, cut, too long, or honest) from an httptest origin to a real
// Fetcher, as a plain file with Range requests or as a trustless gateway,
// for a file of three leaves and for a single leaf of unknown size. A
// fetch must never panic and never return a wrong byte: the whole content,
// verified, or an error.
func FuzzOriginResponse(f *testing.F) {
	fc := newFuzzContent(f)
	var current atomic.Pointer[originReply]
	origin := fc.origin(&current)
	f.Cleanup(origin.Close) // after the Fetcher's close (cleanups run last first)
	fe := fuzzFetcher(f)
	data, c, nodes, leaves, byCid := fc.data, fc.c, fc.nodes, fc.leaves, fc.byCid

	f.Add(uint8(0), 206, uint8(0), "", uint8(5), 0, []byte{})                              // honest, Range
	f.Add(uint8(1), 200, uint8(0), "", uint8(5), 0, []byte{})                              // honest gateway
	f.Add(uint8(2), 200, uint8(2), "0", uint8(5), 0, []byte{})                             // single leaf, size unknown
	f.Add(uint8(0), 200, uint8(0), "bytes 0-9/10", uint8(6), 0, []byte{})                  // a plain 200: the whole file
	f.Add(uint8(0), 206, uint8(1), "5", uint8(2), 5, []byte{})                             // short
	f.Add(uint8(0), 206, uint8(0), "", uint8(1), 77, []byte{})                             // a flipped byte
	f.Add(uint8(3), 200, uint8(0), "", uint8(3), 0, []byte("more"))                        // too long
	f.Add(uint8(0), 404, uint8(2), "text/html", uint8(0), 0, []byte("<h1>not found</h1>")) // an error page
	f.Add(uint8(1), 500, uint8(4), "chunked", uint8(4), 3, []byte("x"))
	f.Fuzz(func(t *testing.T, kind uint8, status int, hdr uint8, val string, mode uint8, cut int, garbage []byte) {
		if status < 200 || status > 599 || cut < 0 || strings.ContainsAny(val, "\r\n") {
			return
		}
		key := ""
		if int(hdr) < len(originHeaders) {
			key = originHeaders[hdr]
		}
		current.Store(&originReply{status: status, hdrKey: key, hdrVal: val, mode: mode, cut: cut, garbage: garbage})
		var tg fetch.Target
		want := data
		switch kind % 4 {
		case 0:
			tg = fetch.Target{Cid: c.Root, Size: c.Size, Nodes: nodes, URL: origin.URL + "/file"}
		case 1:
			tg = fetch.Target{Cid: c.Root, Size: c.Size, Nodes: nodes, Gateway: origin.URL}
		case 2:
			tg = fetch.Target{Cid: leaves[2].Cid, URL: origin.URL + "/leaf"}
			want = byCid[leaves[2].Cid.String()]
		case 3:
			tg = fetch.Target{Cid: leaves[2].Cid, Gateway: origin.URL}
			want = byCid[leaves[2].Cid.String()]
		}
		checkFetch(t, fe, tg, want)
	})
}

// fuzzContent is FuzzOriginResponse's file: three leaves (2 MiB and 1000
// bytes), imported, with its inner nodes, leaves and each leaf's bytes.
type fuzzContent struct {
	data   []byte
	c      store.Content
	nodes  []blocks.Block
	leaves []store.Leaf
	byCid  map[string][]byte
}

func newFuzzContent(f *testing.F) *fuzzContent {
	f.Helper()
	fc := &fuzzContent{data: testutil.Bytes(7, 2<<20+1000), byCid: map[string][]byte{}}
	st, err := store.New(store.Config{InMemory: true, Quota: -1})
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if fc.c, err = st.Import(ctx, bytes.NewReader(fc.data), store.ImportOptions{}); err != nil {
		f.Fatal(err)
	}
	if fc.nodes, err = store.InnerNodes(ctx, st, fc.c.Root); err != nil {
		f.Fatal(err)
	}
	if fc.leaves, err = store.Leaves(ctx, dagfile.NewNodes(fc.nodes), fc.c.Root, fc.c.Size); err != nil {
		f.Fatal(err)
	}
	for _, l := range fc.leaves {
		fc.byCid[l.Cid.String()] = fc.data[l.Offset : l.Offset+l.Size]
	}
	return fc
}

// origin serves the file at any path (its third leaf alone at /leaf) and
// its blocks as a trustless gateway (/ipfs/<cid>), each answer made by the
// reply current holds from the honest bytes.
func (fc *fuzzContent) origin(current *atomic.Pointer[originReply]) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply := current.Load()
		whole := fc.data
		if r.URL.Path == "/leaf" {
			whole = fc.byCid[fc.leaves[2].Cid.String()]
		}
		honest := whole
		if c, ok := strings.CutPrefix(r.URL.Path, "/ipfs/"); ok {
			honest = fc.byCid[c]
		} else if a, b, ok := parseOneRange(r.Header.Get("Range")); ok && a <= b && a < int64(len(whole)) {
			honest = whole[a:min(b+1, int64(len(whole)))]
		}
		if reply.hdrKey != "" {
			w.Header().Set(reply.hdrKey, reply.hdrVal)
		}
		w.WriteHeader(reply.status)
		w.Write(reply.body(honest, whole))
	}))
}

// fuzzFetcher is a Fetcher on a host of its own that knows no peer, with
// short timeouts, over a store that forgets what it is given; closed when
// the fuzz target ends.
func fuzzFetcher(f *testing.F) *fetch.Fetcher {
	f.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(),
		libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { h.Close() })
	fst, err := store.New(store.Config{InMemory: true, Quota: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { fst.Close() })
	fe, err := fetch.New(fetch.Config{Host: h, Store: forgetfulStore{fst}, StallTimeout: 20 * time.Millisecond,
		PeerTimeout: time.Millisecond, ProviderWait: time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { fe.Close() })
	return fe
}

// checkFetch fetches tg and fails unless it gives want exactly or an error.
func checkFetch(t *testing.T, fe *fetch.Fetcher, tg fetch.Target, want []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := fe.Open(ctx, tg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if ctx.Err() != nil {
		t.Fatalf("the fetch did not end in 10 s: %v", err)
	}
	if err != nil {
		if !errors.Is(err, fetch.ErrUnavailable) && !errors.Is(err, fetch.ErrVerify) {
			t.Logf("fetch failed with %v", err) // an error is a right answer; its kind is for the fetch tests
		}
		return
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("fetch returned %d bytes that are not the content (%d bytes)", len(got), len(want))
	}
}

// parseOneRange parses "bytes=a-b".
func parseOneRange(h string) (a, b int64, ok bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0, 0, false
	}
	as, bs, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	a, err1 := strconv.ParseInt(as, 10, 64)
	b, err2 := strconv.ParseInt(bs, 10, 64)
	return a, b, err1 == nil && err2 == nil
}
