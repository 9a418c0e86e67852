package fetch_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/meshtest"
	"github.com/meshcdn/meshcdn/store"
)

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkColdStart (must-show 1): no provider known, so the first byte
// comes from the origin. It prints the median time to first byte of a plain
// http.Get and of Fetcher.Open + Read over 30 interleaved runs of a 4 MiB
// file, and their difference (target: at most 5 ms).
//
//	go test -run '^$' -bench ColdStart -benchtime 1x ./fetch/
func BenchmarkColdStart(b *testing.B) {
	const runs = 30
	a := makeAsset(b, 50, 4*MiB)
	o := newOrigin(b, a.data)
	tg := a.t
	tg.URL = o.URL
	st := newStore(b, -1)
	cl := newNode(b, fetch.Config{Store: st})
	leaves, err := store.Leaves(context.Background(), nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		b.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	one := make([]byte, 1)
	for range b.N {
		var plain, ours []time.Duration
		for range runs {
			start := time.Now()
			resp, err := hc.Get(o.URL)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, one); err != nil {
				b.Fatal(err)
			}
			plain = append(plain, time.Since(start))
			resp.Body.Close()

			start = time.Now()
			r, err := cl.f.Open(context.Background(), tg)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(r, one); err != nil {
				b.Fatal(err)
			}
			ours = append(ours, time.Since(start))
			r.Close()
			st.Remove(context.Background(), a.t.Cid) // cold again
			for _, l := range leaves {
				st.DeleteBlock(context.Background(), l.Cid)
			}
		}
		mp, mo := median(plain), median(ours)
		b.ReportMetric(float64(mp.Microseconds())/1000, "http-ttfb-ms")
		b.ReportMetric(float64(mo.Microseconds())/1000, "meshcdn-ttfb-ms")
		b.ReportMetric(float64((mo-mp).Microseconds())/1000, "extra-ms")
		b.Logf("median TTFB over %d runs: http.Get %v, meshcdn %v, extra %v", runs, mp, mo, mo-mp)
	}
}

// BenchmarkThroughput (must-show 9): a file fetched by plain http.Get, by
// meshcdn from the origin (no provider) and by meshcdn from a peer
// (streamed in file order through the Reader), interleaved, in one process
// on loopback. It prints MiB/s, the ratio to http.Get and the process's CPU
// seconds per GiB (server side included) for each, medians of the
// repetitions. MESHCDN_BENCH_MIB sets the size (default 128),
// MESHCDN_BENCH_REPS the repetitions (default 3) and MESHCDN_BENCH_READAHEAD
// the client's Config.ReadAhead (default: the default).
//
//	go test -run '^$' -bench Throughput -benchtime 1x ./fetch/
func BenchmarkThroughput(b *testing.B) {
	size := int64(envInt("MESHCDN_BENCH_MIB", 128)) * MiB
	tb := &throughputBench{
		b:         b,
		size:      size,
		readAhead: envInt("MESHCDN_BENCH_READAHEAD", 0), // 0: the default
		a:         makeAsset(b, 51, size),
		res:       map[string]*throughputRuns{"http": {}, "origin": {}, "peer": {}, "peer-plainbs": {}},
	}
	reps := envInt("MESHCDN_BENCH_REPS", 3)
	o := newOrigin(b, tb.a.data)
	prov := newNode(b, fetch.Config{})
	prov.hold(b, tb.a)
	plainProv := plainCopy(b, prov, tb.a)
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()

	only := os.Getenv("MESHCDN_BENCH_ONLY") // a comma-separated subset, for profiling
	want := func(name string) bool { return only == "" || slices.Contains(strings.Split(only, ","), name) }
	for range b.N {
		for range reps {
			tb.measure("http", tb.httpGet(hc, o.URL))
			if want("origin") {
				tb.measure("origin", tb.fetchVia(nil, o.URL, false))
			}
			if want("peer") {
				tb.measure("peer", tb.fetchVia(providers{tb.a.t.Cid: {prov.info()}}, "", false))
			}
			if want("peer-plainbs") {
				tb.measure("peer-plainbs", tb.fetchVia(providers{tb.a.t.Cid: {plainProv.info()}}, "", true))
			}
		}
	}
	tb.report()
}

// throughputBench is BenchmarkThroughput's asset and what it measured.
type throughputBench struct {
	b         *testing.B
	size      int64
	readAhead int
	a         asset
	res       map[string]*throughputRuns
}

// throughputRuns are one way's wall and CPU times, one per repetition.
type throughputRuns struct{ wall, cpu []time.Duration }

// plainCopy returns a second provider of a whose store is boxo's plain
// blockstore (no hash on read): with the client on one too, it shows what
// fetch does without store.Store's two extra hashes per block.
func plainCopy(b *testing.B, prov *node, a asset) *node {
	b.Helper()
	plain := newNodePlain(b)
	for _, blk := range allBlocks(b, prov, a) {
		if err := plain.f.Config().Store.Put(context.Background(), blk); err != nil {
			b.Fatal(err)
		}
	}
	return plain
}

// measure times fn, a fetch of the whole asset; the client node it
// fetches with is made before the clock starts and closed after it stops
// (a node is made once per app run, not once per fetch).
func (tb *throughputBench) measure(name string, setup func() (fn func() int64, done func())) {
	fn, done := setup()
	defer done()
	runtime.GC()
	c0, t0 := meshtest.CPUTime(), time.Now()
	n := fn()
	wall, cpu := time.Since(t0), meshtest.CPUTime()-c0
	if n != tb.size {
		tb.b.Fatalf("%s read %d bytes, want %d", name, n, tb.size)
	}
	tb.res[name].wall = append(tb.res[name].wall, wall)
	tb.res[name].cpu = append(tb.res[name].cpu, cpu)
}

// httpGet is measure's setup for a plain http.Get of url.
func (tb *throughputBench) httpGet(hc *http.Client, url string) func() (func() int64, func()) {
	return func() (func() int64, func()) {
		return func() int64 {
			resp, err := hc.Get(url)
			if err != nil {
				tb.b.Fatal(err)
			}
			defer resp.Body.Close()
			n, _ := io.Copy(io.Discard, resp.Body)
			return n
		}, func() {}
	}
}

// fetchVia is measure's setup for a fetch through a new client node that
// knows providers and the origin url ("" for none); plain puts the client
// on boxo's plain blockstore.
func (tb *throughputBench) fetchVia(providers providers, url string, plain bool) func() (func() int64, func()) {
	b := tb.b
	return func() (func() int64, func()) {
		var cl *node
		if plain {
			cl = newNodePlain(b)
			cl.f.Close()
			f, err := fetch.New(fetch.Config{Host: cl.h, Store: cl.plain, Providers: providers, ServeBytesPerSecond: -1, ReadAhead: tb.readAhead})
			if err != nil {
				b.Fatal(err)
			}
			cl.f = f
		} else {
			cl = newNodeNoCleanup(b, fetch.Config{Providers: providers, ReadAhead: tb.readAhead})
		}
		run := func() int64 {
			tg := tb.a.t
			tg.URL = url
			r, err := cl.f.Open(context.Background(), tg)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				b.Fatal(err)
			}
			if st := r.Stats(); url == "" && st.PeerBytes != tb.size {
				b.Fatalf("peer fetch: %+v", st)
			}
			return n
		}
		return run, cl.close
	}
}

// report reports each way's rate, its ratio to http.Get and its CPU per
// GiB (medians), and the ceiling of a verified, encrypted peer fetch on
// this machine: its bytes must at least be hashed once (sha2-256), sealed
// and opened once (AES-128-GCM, what TLS 1.3 chose here) and carried over
// loopback as http.Get carries them; with every core busy and nothing
// else, the fetch can go no faster than NumCPU / that CPU time per byte.
func (tb *throughputBench) report() {
	b, size := tb.b, tb.size
	gib := float64(size) / (1 << 30)
	httpRate := float64(size) / median(tb.res["http"].wall).Seconds()
	rates := map[string]float64{}
	for _, name := range []string{"http", "origin", "peer", "peer-plainbs"} {
		r := tb.res[name]
		if len(r.wall) == 0 {
			continue
		}
		rate := float64(size) / median(r.wall).Seconds()
		rates[name] = rate
		cpuPerGiB := median(r.cpu).Seconds() / gib
		b.ReportMetric(rate/MiB, name+"-MiB/s")
		b.ReportMetric(rate/httpRate, name+"-ratio")
		b.ReportMetric(cpuPerGiB, name+"-cpu-s/GiB")
		b.Logf("%-12s %7.0f MiB/s  %.2fx of http.Get  %.2f CPU s/GiB", name, rate/MiB, rate/httpRate, cpuPerGiB)
	}
	shaCPU, gcmCPU := meshtest.CeilingCPU(tb.a.data)
	httpCPU := median(tb.res["http"].cpu).Seconds() / gib
	floor := shaCPU + gcmCPU + httpCPU
	ceiling := float64(runtime.NumCPU()) / floor * (1 << 30)
	b.ReportMetric(ceiling/httpRate, "ceiling-ratio")
	b.Logf("ceiling      %7.0f MiB/s  %.2fx of http.Get  %.2f CPU s/GiB (sha2-256 %.2f + AES-GCM seal+open %.2f + http.Get %.2f) on %d cores",
		ceiling/MiB, ceiling/httpRate, floor, shaCPU, gcmCPU, httpCPU, runtime.NumCPU())
	if p, ok := rates["peer"]; ok {
		b.ReportMetric(p/ceiling, "peer-of-ceiling")
		b.Logf("peer fetch at %.2f of the ceiling", p/ceiling)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// nodesGetter serves a Target's inner nodes.
type nodesGetter fetch.Target

func (g nodesGetter) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	for _, b := range g.Nodes {
		if b.Cid().Equals(c) {
			return b, nil
		}
	}
	return nil, fmt.Errorf("no node %s", c)
}

// newNodeNoCleanup is newNode for a node the caller closes.
func newNodeNoCleanup(b *testing.B, cfg fetch.Config) *node {
	b.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(),
		libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport))
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.New(store.Config{InMemory: true, Quota: -1})
	if err != nil {
		b.Fatal(err)
	}
	cfg.Host, cfg.Store = h, st
	if cfg.ServeBytesPerSecond == 0 {
		cfg.ServeBytesPerSecond = -1
	}
	f, err := fetch.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return &node{h: h, st: st, f: f}
}

func (n *node) close() {
	n.f.Close()
	n.h.Close()
	n.st.Close()
}

// plainStore is boxo's blockstore on an in-memory datastore, with AddRoot
// doing nothing: no hash on Put or Get.
type plainStore struct{ blockstore.Blockstore }

func (plainStore) AddRoot(context.Context, cid.Cid, bool) error { return nil }

// newNodePlain is a node whose fetcher runs on a plainStore; the caller
// closes it.
func newNodePlain(b *testing.B) *node {
	b.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(),
		libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport))
	if err != nil {
		b.Fatal(err)
	}
	ps := plainStore{blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()), blockstore.NoPrefix())}
	f, err := fetch.New(fetch.Config{Host: h, Store: ps, ServeBytesPerSecond: -1})
	if err != nil {
		b.Fatal(err)
	}
	st, _ := store.New(store.Config{InMemory: true})
	n := &node{h: h, st: st, f: f, plain: ps}
	b.Cleanup(n.close)
	return n
}

// allBlocks returns the blocks of a's DAG from n's store.
func allBlocks(b *testing.B, n *node, a asset) []blocks.Block {
	b.Helper()
	out := slices.Clone(a.t.Nodes)
	leaves, err := store.Leaves(context.Background(), nodesGetter(a.t), a.t.Cid, a.t.Size)
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range leaves {
		blk, err := n.st.Get(context.Background(), l.Cid)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, blk)
	}
	return out
}
