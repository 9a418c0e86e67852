package mesh_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
	"github.com/meshcdn/meshcdn/store"
)

// BenchmarkNodeThroughput fetches one asset from a seed node to an app node
// on 127.0.0.1, as the bench program's throughput scenario does (the seed
// uncapped, the app node with its defaults), beside http.Get from the
// origin in the same run, and then with one thing changed at a time, to
// find what costs a mesh.Node peer fetch its speed next to fetch's
// BenchmarkThroughput (a bare Fetcher on a TCP-only host). The variants
// are interleaved (the machine is shared) and each prints its median MiB/s,
// its ratio to http.Get and to the ceiling (computed as the bench program
// does: NumCPU over the CPU per GiB that a verified, encrypted fetch cannot
// avoid), its CPU s/GiB, the cores it used (CPU over wall time) and the
// ceiling's CPU per GiB over its own (floor/CPU: the ratio to the ceiling
// it would reach with every core to itself):
//
//	app        the app node with its defaults (TCP), the seed as the bench program makes it
//	app-quic   the same over QUIC
//	bigmem     the app node with MaxMemory 8 GiB (the resource manager's limits scaled up)
//	nodht      both nodes with DisableDHT (seed on TCP only)
//	seedcap    the seed with its default ServeBytesPerSecond and ServeConcurrency
//	bare       a bare fetch.Fetcher on a TCP-only host with libp2p's default resource manager
//
// MESHCDN_BENCH_MIB sets the size (default 64), MESHCDN_BENCH_REPS the
// repetitions (default 3), MESHCDN_BENCH_ONLY a comma-separated subset,
// MESHCDN_BENCH_LOG (debug, info, ...) the level of the seeds' log on
// stderr (default: none).
//
//	go test -run '^$' -bench NodeThroughput -benchtime 1x ./mesh
func BenchmarkNodeThroughput(b *testing.B) {
	const path = "big.bin"
	size := int64(envInt("MESHCDN_BENCH_MIB", 64)) << 20
	reps := envInt("MESHCDN_BENCH_REPS", 3)
	org := meshtest.StartOrigin(b, meshtest.OriginConfig{Site: meshtest.GenerateSite(9, map[string]int64{path: size})})
	m := org.Manifest()
	a, _ := m.Lookup(path)
	ctx := context.Background()
	seed, capped := newBenchSeed(ctx, b, org, m, false), newBenchSeed(ctx, b, org, m, true)
	seedNoDHT := meshtest.NewNode(b, mesh.Config{Role: mesh.RoleSeed, Origin: org.URL(), DisableDHT: true,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, ServeBytesPerSecond: -1, ServeConcurrency: -1})
	if err := seedNoDHT.Pin(ctx, m); err != nil {
		b.Fatal(err)
	}

	variants := []benchVariant{
		{"http", func() (time.Duration, time.Duration) { return timeHTTP(b, org.URL()+"/"+path, size) }},
		{"app", func() (time.Duration, time.Duration) { return timeNode(b, m, path, seed, mesh.Config{}, "/tcp/") }},
		{"app-quic", func() (time.Duration, time.Duration) {
			return timeNode(b, m, path, seed, mesh.Config{ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}}, "/quic-v1/p2p/")
		}},
		{"bigmem", func() (time.Duration, time.Duration) {
			return timeNode(b, m, path, seed, mesh.Config{MaxMemory: 8 << 30}, "/tcp/")
		}},
		{"nodht", func() (time.Duration, time.Duration) {
			return timeNode(b, m, path, seedNoDHT, mesh.Config{DisableDHT: true}, "/tcp/")
		}},
		{"seedcap", func() (time.Duration, time.Duration) { return timeNode(b, m, path, capped, mesh.Config{}, "/tcp/") }},
		{"bare", func() (time.Duration, time.Duration) { return timeBare(b, a, seed) }},
	}
	only := os.Getenv("MESHCDN_BENCH_ONLY")
	walls, cpus := map[string][]time.Duration{}, map[string][]time.Duration{}
	for range b.N {
		for range reps {
			for _, v := range variants {
				if v.name != "http" && only != "" && !slices.Contains(strings.Split(only, ","), v.name) {
					continue
				}
				wall, cpu := v.run()
				walls[v.name], cpus[v.name] = append(walls[v.name], wall), append(cpus[v.name], cpu)
			}
		}
	}
	reportThroughput(b, variants, walls, cpus, org.Site()[path], size)
}

// benchVariant is one way of fetching of BenchmarkNodeThroughput: run
// fetches the asset once and returns the wall and CPU time it took.
type benchVariant struct {
	name string
	run  func() (wall, cpu time.Duration)
}

// newBenchSeed starts a seed of BenchmarkNodeThroughput on org (its log on
// stderr at MESHCDN_BENCH_LOG's level, if set), uncapped unless capped,
// and pins m on it.
func newBenchSeed(ctx context.Context, b *testing.B, org *meshtest.Origin, m *manifest.Manifest, capped bool) *mesh.Node {
	b.Helper()
	cfg := mesh.Config{Role: mesh.RoleSeed, Origin: org.URL(), DisableDHT: false,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}}
	if lv := os.Getenv("MESHCDN_BENCH_LOG"); lv != "" { // the seeds' log, at this level
		var l slog.Level
		if err := l.UnmarshalText([]byte(lv)); err != nil {
			b.Fatal(err)
		}
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	}
	if !capped {
		cfg.ServeBytesPerSecond, cfg.ServeConcurrency = -1, -1
	}
	s := meshtest.NewNode(b, cfg)
	if err := s.Pin(ctx, m); err != nil {
		b.Fatal(err)
	}
	return s
}

// reportThroughput logs and reports, for each variant that ran, its median
// MiB/s over the wall times walls and the CPU times cpus of fetching data
// (size bytes), beside http.Get's and the ceiling's (see
// BenchmarkNodeThroughput).
func reportThroughput(b *testing.B, variants []benchVariant, walls, cpus map[string][]time.Duration, data []byte, size int64) {
	b.Helper()
	gib := float64(size) / (1 << 30)
	mibps := func(ds []time.Duration) float64 { return gib * 1024 / meshtest.Percentile(ds, 0.5).Seconds() }
	cpuPerGiB := func(ds []time.Duration) float64 { return meshtest.Percentile(ds, 0.5).Seconds() / gib }
	// The ceiling as the bench program and fetch's BenchmarkThroughput
	// compute it: NumCPU over the CPU per GiB a verified, encrypted fetch
	// cannot avoid. It assumes the process gets every core; "cores" shows
	// how many each way of fetching actually used (CPU over wall time).
	sha, gcm := meshtest.CeilingCPU(data)
	floor := sha + gcm + cpuPerGiB(cpus["http"])
	ceiling := float64(runtime.NumCPU()) / floor * 1024
	httpRate := mibps(walls["http"])
	b.Logf("ceiling   %7.0f MiB/s  %.2f of http.Get  %.2f CPU s/GiB on %d cores", ceiling, ceiling/httpRate, floor, runtime.NumCPU())
	for _, v := range variants {
		if ds := walls[v.name]; len(ds) > 0 {
			rate, cpu := mibps(ds), cpuPerGiB(cpus[v.name])
			b.Logf("%-9s %7.0f MiB/s  %.2f of http.Get  %.2f of ceiling  %.2f CPU s/GiB  %.2f cores  floor/CPU %.2f",
				v.name, rate, rate/httpRate, rate/ceiling, cpu, rate/1024*cpu, floor/cpu)
			b.ReportMetric(rate, v.name+"-MiB/s")
		}
	}
}

func envInt(name string, def int) int {
	var n int
	if s := os.Getenv(name); s != "" {
		for _, c := range s {
			n = n*10 + int(c-'0')
		}
		return n
	}
	return def
}

func timeHTTP(b *testing.B, u string, size int64) (wall, cpu time.Duration) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	runtime.GC()
	c0, t0 := meshtest.CPUTime(), time.Now()
	resp, err := (&http.Client{Transport: tr}).Get(u)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != size {
		b.Fatalf("http.Get: %d bytes, %v", n, err)
	}
	return time.Since(t0), meshtest.CPUTime() - c0
}

// timeNode makes an app node with cfg, bootstrapped to seed's address that
// contains part, waits for the seed's announcement, and times the fetch;
// the node is made before the clock starts and closed after it stops.
func timeNode(b *testing.B, m *manifest.Manifest, path string, seed *mesh.Node, cfg mesh.Config, part string) (wall, cpu time.Duration) {
	if len(cfg.ListenAddrs) == 0 {
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	for _, ad := range seed.Addrs() {
		if strings.Contains(ad.String(), part) {
			cfg.Bootstrap = []string{ad.String()}
			break
		}
	}
	if lv := os.Getenv("MESHCDN_BENCH_LOG"); lv != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(lv)); err != nil {
			b.Fatal(err)
		}
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})).With("node", "app")
	}
	n, err := mesh.New(context.Background(), meshtest.LocalConfig(cfg))
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	a, _ := m.Lookup(path)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitPeers(ctx, 1); err != nil {
		b.Fatal(err)
	}
	if err := meshtest.WaitProvider(ctx, n, a.Cid); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	c0, t0 := meshtest.CPUTime(), time.Now()
	r, _, err := n.OpenAsset(context.Background(), m, path)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if got, err := io.Copy(io.Discard, r); err != nil || got != a.Size || r.Stats().PeerBytes != a.Size {
		b.Fatalf("fetch via %s: %d bytes, %v, %+v", cfg.Bootstrap, got, err, r.Stats())
	}
	return time.Since(t0), meshtest.CPUTime() - c0
}

// onePeer is a routing.ContentDiscovery that names one peer for every CID.
type onePeer peer.AddrInfo

func (p onePeer) FindProvidersAsync(context.Context, cid.Cid, int) <-chan peer.AddrInfo {
	ch := make(chan peer.AddrInfo, 1)
	ch <- peer.AddrInfo(p)
	close(ch)
	return ch
}

// timeBare times a fetch by a bare fetch.Fetcher on a TCP-only host with
// libp2p's default resource manager, as fetch's BenchmarkThroughput makes
// its client.
func timeBare(b *testing.B, a manifest.Asset, seed *mesh.Node) (wall, cpu time.Duration) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(),
		libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	st, err := store.New(store.Config{InMemory: true, Quota: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	f, err := fetch.New(fetch.Config{Host: h, Store: st, ServeBytesPerSecond: -1,
		Providers: onePeer(peer.AddrInfo{ID: seed.Host().ID(), Addrs: seed.Host().Addrs()})})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tg, err := fetch.AssetTarget(a, "", "")
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	c0, t0 := meshtest.CPUTime(), time.Now()
	r, err := f.Open(context.Background(), tg)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if got, err := io.Copy(io.Discard, r); err != nil || got != a.Size || r.Stats().PeerBytes != a.Size {
		b.Fatalf("bare fetch: %d bytes, %v, %+v", got, err, r.Stats())
	}
	return time.Since(t0), meshtest.CPUTime() - c0
}
