package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/store"
)

var modTime = time.Unix(1_700_000_000, 0)

func TestNewConfigErrors(t *testing.T) {
	h := newHost(t)
	st := newStore(t, -1)
	for _, tc := range []struct {
		name string
		cfg  fetch.Config
	}{
		{"no host", fetch.Config{Store: st}},
		{"no store", fetch.Config{Host: h}},
		{"negative timeout", fetch.Config{Host: h, Store: st, PeerTimeout: -1}},
		{"negative read-ahead", fetch.Config{Host: h, Store: st, ReadAhead: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := fetch.New(tc.cfg)
			if err == nil {
				f.Close()
			}
			if !errors.Is(err, fetch.ErrConfig) {
				t.Errorf("New(%s) = %v, want an error matching ErrConfig", tc.name, err)
			}
		})
	}
	f, err := fetch.New(fetch.Config{Host: h, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Config(); got.PeerTimeout != 200*time.Millisecond || got.ReadAhead != fetch.DefaultReadAhead {
		t.Errorf("Config() = %+v, want defaults filled in", got)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := f.Close(); !errors.Is(err, fetch.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	if _, err := f.Open(context.Background(), fetch.Target{Cid: makeAsset(t, 1, 10).t.Cid}); !errors.Is(err, fetch.ErrClosed) {
		t.Errorf("Open after Close = %v, want ErrClosed", err)
	}
}

// TestLocalHit: content the store holds is read from it, no network.
func TestLocalHit(t *testing.T) {
	a := makeAsset(t, 40, 2*MiB+3)
	cl := newNode(t, fetch.Config{})
	cl.hold(t, a)
	r, err := cl.f.Open(context.Background(), fetch.Target{Cid: a.t.Cid}) // by CID alone
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkBytes(t, readAll(t, r), a.data)
	if st := r.Stats(); st.LocalBytes != int64(len(a.data)) || st.PeerBytes+st.OriginBytes != 0 {
		t.Errorf("Stats = %+v, want all local", st)
	}
}

// TestByCIDFromPeer: opened by CID alone, the inner nodes come from the
// provider too.
func TestByCIDFromPeer(t *testing.T) {
	a := makeAsset(t, 41, 3*MiB)
	prov := newNode(t, fetch.Config{})
	prov.hold(t, a)
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {prov.info()}}})
	r, err := cl.f.Open(context.Background(), fetch.Target{Cid: a.t.Cid})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkBytes(t, readAll(t, r), a.data)
	if n, err := r.Seek(0, io.SeekEnd); err != nil || n != int64(len(a.data)) {
		t.Errorf("Seek(0, End) = %d, %v; want %d", n, err, len(a.data))
	}
}

// TestGateway: a trustless gateway origin serves raw blocks, including the
// inner nodes of content opened by CID alone.
func TestGateway(t *testing.T) {
	a := makeAsset(t, 42, 2*MiB+1)
	src := newStore(t, -1)
	holder := &node{st: src}
	holder.hold(t, a)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := cidFromPath(r.URL.Path)
		if err != nil || r.URL.Query().Get("format") != "raw" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		b, err := src.Get(r.Context(), c)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.ipld.raw")
		w.Write(b.RawData())
	}))
	defer gw.Close()
	cl := newNode(t, fetch.Config{})
	r, err := cl.f.Open(context.Background(), fetch.Target{Cid: a.t.Cid, Gateway: gw.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkBytes(t, readAll(t, r), a.data)
	waitStored(t, cl.st, a.t.Cid)
}

// TestLyingOrigin: a trustless gateway whose block does not match its CID
// fails the fetch with a *VerifyError inside ErrUnavailable; nothing wrong
// is handed out. (A plain origin's mismatching bytes are the file having
// changed: TestChangedOrigin.)
func TestLyingOrigin(t *testing.T) {
	a := makeAsset(t, 43, 2*MiB)
	src := newStore(t, -1)
	(&node{st: src}).hold(t, a)
	leaves, err := store.Leaves(context.Background(), src, a.t.Cid, a.t.Size)
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := cidFromPath(r.URL.Path)
		if err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		b, err := src.Get(r.Context(), c)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		data := append([]byte(nil), b.RawData()...)
		if c.Equals(leaves[1].Cid) {
			data[10] ^= 0xff
		}
		w.Write(data)
	}))
	defer gw.Close()
	cl := newNode(t, fetch.Config{StallTimeout: 100 * time.Millisecond})
	tg := a.t
	tg.Gateway = gw.URL
	r := cl.open(t, tg)
	got, err := io.ReadAll(r)
	var ve *fetch.VerifyError
	if !errors.Is(err, fetch.ErrUnavailable) || !errors.As(err, &ve) || !errors.Is(err, fetch.ErrVerify) || errors.Is(err, fetch.ErrChanged) {
		t.Fatalf("ReadAll = %v, want ErrUnavailable wrapping a *VerifyError", err)
	}
	if ve.Source != fetch.SourceOrigin || !strings.HasPrefix(ve.Error(), "fetch: ") {
		t.Errorf("VerifyError = %+v", ve)
	}
	checkBytes(t, got, a.data[:len(got)])
	if len(got) > MiB {
		t.Errorf("read %d bytes, want at most the first (good) leaf", len(got))
	}
}

// TestResolveNoSourceSaysWhy opens a file of several leaves by its CID
// alone, with no peer, origin or gateway: the read fails with ErrNoRoute
// once no peer has sent the root for StallTimeout, saying so, not with
// the text of a context deadline (the caller's context has not ended).
func TestResolveNoSourceSaysWhy(t *testing.T) {
	a := makeAsset(t, 45, 2*MiB)
	cl := newNode(t, fetch.Config{StallTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := cl.f.Open(ctx, fetch.Target{Cid: a.t.Cid})
	if err == nil {
		defer r.Close()
		_, err = io.ReadAll(r)
	}
	if !errors.Is(err, fetch.ErrNoRoute) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "deadline") || !strings.Contains(err.Error(), "no peer sent it within 100ms") {
		t.Errorf("reading a CID nobody holds = %v; want ErrNoRoute saying no peer sent the root within 100ms", err)
	}
}

// TestCloseAndCancel: Close and a cancelled context end a fetch that waits.
func TestCloseAndCancel(t *testing.T) {
	a := makeAsset(t, 44, 2*MiB)
	silent := silentPeer(t)
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {{ID: silent.ID(), Addrs: silent.Addrs()}}}})

	ctx, cancel := context.WithCancel(context.Background())
	r, err := cl.f.Open(ctx, a.t) // no origin: it waits on the silent peer
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.Read(make([]byte, 10)); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Read after cancel = %v, want context.Canceled", err)
	}
	r.Close()

	r, err = cl.f.Open(context.Background(), a.t)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, err := r.Read(make([]byte, 10)); done <- err }()
	if err := cl.f.Close(); err != nil {
		t.Fatalf("Fetcher.Close = %v", err)
	}
	if err := <-done; !errors.Is(err, fetch.ErrClosed) {
		t.Errorf("Read after Fetcher.Close = %v, want ErrClosed", err)
	}
	if err := r.Close(); !errors.Is(err, fetch.ErrClosed) {
		t.Errorf("Reader.Close after Fetcher.Close = %v, want ErrClosed", err)
	}
}

// TestOpenPathAndMetrics: a manifest path is fetched from the origin, and
// the metrics land on the registry the caller gave (not the global one).
func TestOpenPathAndMetrics(t *testing.T) {
	a := makeAsset(t, 45, MiB+100)
	small := makeAsset(t, 46, 1000)
	mux := http.NewServeMux()
	mux.HandleFunc("/site/app.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "app.js", modTime, strings.NewReader(string(a.data)))
	})
	mux.HandleFunc("/site/logo.png", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "logo.png", modTime, strings.NewReader(string(small.data)))
	})
	o := httptest.NewServer(mux)
	defer o.Close()
	m := &manifest.Manifest{Version: 1, Assets: []manifest.Asset{
		{Path: "app.js", Cid: a.t.Cid, Size: a.t.Size, Type: "text/javascript", Nodes: a.t.Nodes},
		{Path: "logo.png", Cid: small.t.Cid, Size: small.t.Size, Type: "image/png"},
	}}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m, err = manifest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cl := newNode(t, fetch.Config{PrometheusRegisterer: reg})
	for _, p := range []struct {
		path string
		want []byte
	}{{"app.js", a.data}, {"logo.png", small.data}} {
		r, err := cl.f.OpenPath(context.Background(), m, o.URL+"/site", p.path)
		if err != nil {
			t.Fatalf("OpenPath(%s): %v", p.path, err)
		}
		checkBytes(t, readAll(t, r), p.want)
		r.Close()
	}
	if _, err := cl.f.OpenPath(context.Background(), m, o.URL, "nope"); !errors.Is(err, fetch.ErrNoRoute) {
		t.Errorf("OpenPath(nope) = %v, want ErrNoRoute", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += fmt.Sprintf("{%s=%s}", l.GetName(), l.GetValue())
			}
			switch {
			case m.Counter != nil:
				got[name] = m.Counter.GetValue()
			case m.Gauge != nil:
				got[name] = m.Gauge.GetValue()
			case m.Histogram != nil:
				got[name] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	for name, want := range map[string]float64{
		"meshcdn_fetch_bytes_total{source=origin}":     float64(len(a.data) + len(small.data)),
		"meshcdn_fetch_fetches_total{result=complete}": 2,
		"meshcdn_fetch_ttfb_seconds":                   2,
		"meshcdn_fetch_offload_ratio":                  0,
		"meshcdn_fetch_origin_sent_bytes_total":        float64(len(a.data) + len(small.data)),
		"meshcdn_fetch_moved_wants_total":              0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("metric %s = %v (present %v), want %v (all: %v)", name, v, ok, want, got)
		}
	}
	// A second Fetcher on the same registry is refused, not a panic.
	if _, err := fetch.New(fetch.Config{Host: newHost(t), Store: newStore(t, -1), PrometheusRegisterer: reg}); err == nil {
		t.Errorf("second Fetcher on one registry: nil error")
	}
	_ = store.Leaf{}
}

// TestOpenPathFileNames: an asset whose file name holds "%", "?", "#", a
// space or non-ASCII letters is fetched from a static file server under that
// name. A "%" in a manifest path used to be sent as an escape ("a%20b.txt"
// asked for "a b.txt": 404).
func TestOpenPathFileNames(t *testing.T) {
	dir := t.TempDir()
	names := []string{"100%.txt", "a%20b.txt", "x%2Fy.txt", "q?x#y.txt", "dir with space/ünï ß.txt"}
	var assets []manifest.Asset
	data := map[string][]byte{}
	for i, name := range names {
		a := makeAsset(t, uint64(60+i), int64(1000+i))
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), a.data, 0o644); err != nil {
			t.Fatal(err)
		}
		assets = append(assets, manifest.Asset{Path: name, Cid: a.t.Cid, Size: a.t.Size, Type: "text/plain"})
		data[name] = a.data
	}
	o := httptest.NewServer(http.StripPrefix("/site", http.FileServer(http.Dir(dir))))
	defer o.Close()
	m := &manifest.Manifest{Version: 1, Assets: assets}
	cl := newNode(t, fetch.Config{})
	for _, name := range names {
		r, err := cl.f.OpenPath(context.Background(), m, o.URL+"/site/", name)
		if err != nil {
			t.Errorf("OpenPath(%q): %v", name, err)
			continue
		}
		checkBytes(t, readAll(t, r), data[name])
		r.Close()
	}
}

// TestEmptyFile: the empty file (size 0 is known from its CID) reads as
// empty at once.
func TestEmptyFile(t *testing.T) {
	a := makeAsset(t, 47, 0)
	o := newOrigin(t, a.data)
	cl := newNode(t, fetch.Config{})
	tg := a.t
	tg.URL = o.URL
	r, err := cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatalf("Open(%v): %v", a.t.Cid, err)
	}
	defer r.Close()
	if got := readAll(t, r); len(got) != 0 {
		t.Errorf("read %d bytes, want 0", len(got))
	}
}

// TestOriginIgnoringRange: an origin that answers every Range request with
// the whole file (200), as python's http.server does, still gives a correct
// fetch: each leaf is cut out of the whole-file answer and checked.
func TestOriginIgnoringRange(t *testing.T) {
	a := makeAsset(t, 45, 3*MiB+77)
	o := newWholeOrigin(t, a.data)
	cl := newNode(t, fetch.Config{})
	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	checkBytes(t, readAll(t, r), a.data)
	// One request finds out; one more reads the rest of the file whole.
	if st := r.Stats(); st.OriginBytes != int64(len(a.data)) || o.reqs.Load() > 2 {
		t.Errorf("stats %+v after %d origin requests, want at most 2", st, o.reqs.Load())
	}
}

// TestOriginIgnoringRangeWholeReadOnce: a whole-file read that ends while
// the plan that began it is still starting its other leaves is not begun
// again for them (under -race on a loaded machine the file was read a
// second time: three requests in TestOriginIgnoringRange). The hook holds
// the plan at its second leaf until the whole read has ended; whole reads
// are counted as they begin (the origin's count would miss one begun as
// the test ends).
func TestOriginIgnoringRangeWholeReadOnce(t *testing.T) {
	a := makeAsset(t, 46, 3*MiB+77)
	o := newWholeOrigin(t, a.data)
	var held, whole atomic.Bool
	var wholeReads atomic.Int64
	fetch.SetWholeHook(t, func(*fetch.Reader) { wholeReads.Add(1) })
	fetch.SetGoOriginHook(t, func(r *fetch.Reader, i int) {
		if i < 2 || held.Swap(true) {
			return
		}
		whole.Store(r.WholeReading())
		for deadline := time.Now().Add(10 * time.Second); r.WholeReading() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond) // the read ends in its own goroutine; no event tells
		}
	})
	cl := newNode(t, fetch.Config{})
	tg := a.t
	tg.URL = o.URL
	r := cl.open(t, tg)
	checkBytes(t, readAll(t, r), a.data)
	r.Close() // waits for the plan held at its second leaf to finish starting
	if !held.Load() || !whole.Load() {
		t.Fatalf("the plan did not reach its second leaf with a whole read under way (held %v, whole %v)", held.Load(), whole.Load())
	}
	if n := wholeReads.Load(); n != 1 {
		t.Errorf("%d whole-file reads begun, want 1 (%d origin requests so far)", n, o.reqs.Load())
	}
}

// TestClosedRightAfterLastByteIsStored: a reader closed as soon as it read
// the last byte still leaves the content named in the store (and so
// announced) when Close returns.
func TestClosedRightAfterLastByteIsStored(t *testing.T) {
	for i := range 5 {
		a := makeAsset(t, uint64(60+i), 3*MiB+5)
		o := newOrigin(t, a.data)
		cl := newNode(t, fetch.Config{})
		tg := a.t
		tg.URL = o.URL
		r, err := cl.f.Open(context.Background(), tg)
		if err != nil {
			t.Fatal(err)
		}
		checkBytes(t, readAll(t, r), a.data)
		r.Close()
		if !cl.st.Holds(a.t.Cid) {
			t.Fatalf("run %d: content not held right after Close", i)
		}
	}
}

// advertiser records what a Fetcher tells it.
type advertiser struct {
	mu        sync.Mutex
	fetching  []cid.Cid
	abandoned []cid.Cid
	told      chan struct{}
}

func (a *advertiser) Fetching(ctx context.Context, c cid.Cid) error {
	a.mu.Lock()
	a.fetching = append(a.fetching, c)
	a.mu.Unlock()
	a.told <- struct{}{}
	return nil
}

func (a *advertiser) Abandoned(ctx context.Context, c cid.Cid) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.abandoned = append(a.abandoned, c)
	return nil
}

// TestAdvertiser: a cold fetch (no provider known) is advertised once when
// its origin requests start; one closed before its content is stored is
// abandoned, one that completes is not; a fetch with a provider known is
// not advertised.
func TestAdvertiser(t *testing.T) {
	a := makeAsset(t, 80, 3*MiB)
	o := newOrigin(t, a.data)
	o.limit = rate.NewLimiter(4*MiB, 64<<10) // slow enough to close mid-fetch
	tg := a.t
	tg.URL = o.URL
	adv := &advertiser{told: make(chan struct{}, 4)}
	cl := newNode(t, fetch.Config{Advertiser: adv})

	// Closed mid-fetch: advertised, then abandoned.
	r, err := cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	<-adv.told
	r.Close()
	adv.mu.Lock()
	if len(adv.fetching) != 1 || !adv.fetching[0].Equals(a.t.Cid) || len(adv.abandoned) != 1 || !adv.abandoned[0].Equals(a.t.Cid) {
		t.Errorf("after a fetch closed mid-way: fetching %v, abandoned %v; want %s once each", adv.fetching, adv.abandoned, a.t.Cid)
	}
	adv.fetching, adv.abandoned = nil, nil
	adv.mu.Unlock()

	// Read to the end: advertised, stored, not abandoned.
	tg.URL = newOrigin(t, a.data).URL
	r, err = cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, readAll(t, r), a.data)
	r.Close()
	adv.mu.Lock()
	if len(adv.fetching) != 1 || len(adv.abandoned) != 0 || !r.Stats().Stored {
		t.Errorf("after a whole fetch: fetching %v, abandoned %v, stored %v; want one fetching, none abandoned, stored", adv.fetching, adv.abandoned, r.Stats().Stored)
	}
	adv.mu.Unlock()

	// A provider known: peers, not this node, are the source to tell of.
	b := makeAsset(t, 81, 2*MiB)
	prov := newNode(t, fetch.Config{})
	prov.hold(t, b)
	adv2 := &advertiser{told: make(chan struct{}, 4)}
	cl2 := newNode(t, fetch.Config{Advertiser: adv2, Providers: providers{b.t.Cid: {prov.info()}}})
	tb := b.t
	tb.URL = newOrigin(t, b.data).URL
	r, err = cl2.f.Open(context.Background(), tb)
	if err != nil {
		t.Fatal(err)
	}
	checkBytes(t, readAll(t, r), b.data)
	r.Close()
	adv2.mu.Lock()
	defer adv2.mu.Unlock()
	if len(adv2.fetching) != 0 || len(adv2.abandoned) != 0 {
		t.Errorf("with a provider known: fetching %v, abandoned %v; want nothing told", adv2.fetching, adv2.abandoned)
	}
}

// TestOpenRefusesUnverifiableHashes: a CID whose hash no bytes are
// verified against (another hash function, or a sha2-256 digest cut
// short, which go-multihash would check by truncating, so that a peer
// could forge its bytes) is ErrNoRoute before anything is asked.
func TestOpenRefusesUnverifiableHashes(t *testing.T) {
	cl := newNode(t, fetch.Config{})
	short, err := mh.Sum([]byte("an asset"), mh.SHA2_256, 4)
	if err != nil {
		t.Fatal(err)
	}
	other, err := mh.Sum([]byte("an asset"), mh.SHA2_512, -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []mh.Multihash{short, other} {
		c := cid.NewCidV1(cid.Raw, h)
		if _, err := cl.f.Open(context.Background(), fetch.Target{Cid: c, Size: 8}); !errors.Is(err, fetch.ErrNoRoute) {
			t.Errorf("Open(%s) = %v, want ErrNoRoute", c, err)
		}
	}
	if got := cl.f.Stats().Fetches; got != 0 {
		t.Errorf("%d fetches counted, want 0", got)
	}
}
