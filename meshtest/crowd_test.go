package meshtest_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

func TestArrivals(t *testing.T) {
	if got := meshtest.AtOnce()(3); !slices.Equal(got, []time.Duration{0, 0, 0}) {
		t.Errorf("AtOnce()(3) = %v", got)
	}
	if got := meshtest.Staggered(time.Second)(3); !slices.Equal(got, []time.Duration{0, 500 * time.Millisecond, time.Second}) {
		t.Errorf("Staggered(1s)(3) = %v", got)
	}
	if got := meshtest.Staggered(time.Second)(1); !slices.Equal(got, []time.Duration{0}) {
		t.Errorf("Staggered(1s)(1) = %v", got)
	}
	p1, p1again, p2 := meshtest.Poisson(10*time.Second, 1)(50), meshtest.Poisson(10*time.Second, 1)(50), meshtest.Poisson(10*time.Second, 2)(50)
	if !slices.Equal(p1, p1again) || slices.Equal(p1, p2) {
		t.Error("Poisson: the same seed gave another schedule, or another seed the same")
	}
	if !slices.IsSorted(p1) || p1[0] < 0 || p1[49] > 10*time.Second || p1[49]-p1[0] < 5*time.Second {
		t.Errorf("Poisson(10s)(50) = %v, want sorted times spread over [0, 10s]", p1)
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0, 1}, {0.5, 3}, {0.95, 4}, {1, 5}} {
		if got := meshtest.Percentile(ds, tc.p); got != tc.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", ds, tc.p, got, tc.want)
		}
	}
	if !slices.Equal(ds, []time.Duration{5, 1, 4, 2, 3}) {
		t.Error("Percentile changed its argument")
	}
	if got := meshtest.Percentile(nil, 0.5); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
}

// TestCrowdSeedServesApps: one seed pins the site from the origin, then
// five apps arrive and take it from the seed and each other.
func TestCrowdSeedServesApps(t *testing.T) {
	site := meshtest.DemoSite(9, 2<<20+1)
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: site, BytesPerSecond: 16 << 20, Latency: 10 * time.Millisecond})
	// Peers get 5 s before the origin joins: the test is about the crowd's
	// wiring and accounting, not the 200 ms race, which -race on a loaded
	// machine can lose.
	c, r := runCrowd(t, meshtest.CrowdConfig{Origin: o, Seeds: 1, Apps: 5, Arrival: meshtest.Staggered(300 * time.Millisecond),
		App: mesh.Config{PeerTimeout: 5 * time.Second}, WaitProvider: 10 * time.Second}, 2*time.Minute)
	if len(r.Nodes) != 6 || len(c.Nodes()) != 6 || r.Nodes[0].Role != mesh.RoleSeed || r.Assets != len(site) || r.SiteBytes != site.Size() {
		t.Fatalf("report: %d nodes, %d assets of %d bytes; want 6 nodes, %d assets of %d", len(r.Nodes), r.Assets, r.SiteBytes, len(site), site.Size())
	}
	if len(r.Fetches) != 6*len(site) {
		t.Errorf("%d fetches, want %d", len(r.Fetches), 6*len(site))
	}
	for _, f := range r.Fetches {
		if f.Err != "" || f.TTFB <= 0 || f.Duration < f.TTFB || f.PeerBytes+f.OriginBytes+f.LocalBytes != f.Size {
			t.Errorf("fetch %+v: want no error, a TTFB within its duration and every byte counted", f)
		}
	}
	if r.OriginSent < r.SiteBytes || r.Copies != float64(r.OriginSent)/float64(r.SiteBytes) || o.Sent() < r.OriginSent {
		t.Errorf("origin sent %d (%.2f copies), want at least the seed's copy of %d", r.OriginSent, r.Copies, r.SiteBytes)
	}
	if r.AppOffload < 0.9 || r.AppPeerBytes < 5*r.SiteBytes*9/10 {
		t.Errorf("apps: offload %.3f, %d bytes from peers; want at least 0.9 of 5 copies from the seed", r.AppOffload, r.AppPeerBytes)
	}
	for _, n := range r.Nodes[1:] {
		if n.Done <= n.Arrival || n.Arrival < r.AppsStart || n.Fetches != len(site) {
			t.Errorf("app %s arrived %v, done %v, %d fetches", n.Name, n.Arrival, n.Done, n.Fetches)
		}
		if n.Links < 1 || n.Links > 5 {
			t.Errorf("app %s linked to %d others, want the seed at least and at most the 5 others", n.Name, n.Links)
		}
	}
	if r.Nodes[0].Links != 5 {
		t.Errorf("the seed linked to %d apps, want the 5 that were bootstrapped to it", r.Nodes[0].Links)
	}
	if got := len(r.Completions()); got != 5 {
		t.Errorf("%d completions, want 5", got)
	}
	if got := len(r.TTFBs(meshtest.FromApps)); got != 5*len(site) {
		t.Errorf("%d app TTFBs, want %d", got, 5*len(site))
	}
}

// runCrowd makes a crowd of cfg, closed when t ends, and runs it within
// timeout; it fails t if the crowd cannot be made or a fetch fails.
func runCrowd(t *testing.T, cfg meshtest.CrowdConfig, timeout time.Duration) (*meshtest.Crowd, *meshtest.Report) {
	t.Helper()
	c, err := meshtest.NewCrowd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, r
}

// TestCrowdReportsFailures: an origin that answers 500 to the video, no
// seed: Run reports the failed fetches, and the others succeed.
func TestCrowdReportsFailures(t *testing.T) {
	site := meshtest.GenerateSite(10, map[string]int64{"a.txt": 1000, "v.mp4": 2 << 20})
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: site})
	o.SetFault(meshtest.FaultPath("v.mp4", meshtest.Fault{Kind: meshtest.FaultStatus, Status: 500}))
	c, err := meshtest.NewCrowd(meshtest.CrowdConfig{Origin: o, Apps: 2, Badger: true, WaitProvider: -1, Neighbours: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := c.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "v.mp4") {
		t.Errorf("Run = %v, want the video's failures", err)
	}
	var failed, ok int
	for _, f := range r.Fetches {
		if f.Err != "" {
			failed++
		} else {
			ok++
		}
	}
	if failed != 2 || ok != 2 || r.Nodes[0].Failed != 1 {
		t.Errorf("%d failed and %d good fetches, want 2 and 2", failed, ok)
	}
	if cfg := c.Nodes()[0].Config(); cfg.InMemory || cfg.DataDir == "" {
		t.Errorf("Badger crowd node: InMemory %v, DataDir %q", cfg.InMemory, cfg.DataDir)
	}
	dir := c.Nodes()[0].Config().DataDir
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after Close, %s: %v; want it removed", dir, err)
	}
}

// TestCrowdAtOnceIsOneMesh: apps that all start at the same moment, no
// seed, end up as one mesh: each meets apps that finished starting while it
// started. Bootstrapped only to apps started before them, they found none
// and stayed islands, each fetching the site from the origin alone.
func TestCrowdAtOnceIsOneMesh(t *testing.T) {
	site := meshtest.DemoSite(3, 64<<10)
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: site})
	const apps = 8
	c, _ := runCrowd(t, meshtest.CrowdConfig{Origin: o, Apps: apps, Arrival: meshtest.AtOnce(), WaitProvider: -1}, time.Minute)
	nodes := c.Nodes()
	index := make(map[peer.ID]int, len(nodes))
	for i, n := range nodes {
		index[n.ID()] = i
	}
	// Everyone reachable from the first over the connections they hold.
	seen := map[int]bool{0: true}
	for queue := []int{0}; len(queue) > 0; queue = queue[1:] {
		for _, p := range nodes[queue[0]].Host().Network().Peers() {
			if j, ok := index[p]; ok && !seen[j] {
				seen[j] = true
				queue = append(queue, j)
			}
		}
	}
	if len(nodes) != apps || len(seen) != apps {
		t.Fatalf("%d of %d apps reachable from the first over connections: islands", len(seen), len(nodes))
	}
}

// TestCrowdLogNamesNodes: a crowd whose nodes share one Logger tags each
// node's records with its name, so that a crowd's log can be read node by
// node.
func TestCrowdLogNamesNodes(t *testing.T) {
	site := meshtest.GenerateSite(11, map[string]int64{"a.txt": 1000})
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: site})
	var sink startedNodes
	log := slog.New(recorder{sink: &sink})
	runCrowd(t, meshtest.CrowdConfig{Origin: o, Seeds: 1, Apps: 2, WaitProvider: -1,
		Seed: mesh.Config{Logger: log}, App: mesh.Config{Logger: log}}, time.Minute)
	started := sink.names()
	slices.Sort(started)
	if want := []string{"app-1", "app-2", "seed-1"}; !slices.Equal(started, want) {
		t.Errorf("nodes named in the \"node started\" records: %q, want %q", started, want)
	}
}

// recorder is a slog.Handler that keeps, in its sink, the node attribute
// of each "node started" record.
type recorder struct {
	sink  *startedNodes
	attrs []slog.Attr
}

type startedNodes struct {
	mu    sync.Mutex
	nodes []string
}

func (h recorder) Enabled(context.Context, slog.Level) bool { return true }

func (h recorder) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "node started" {
		return nil
	}
	node := "(none)"
	for _, a := range h.attrs {
		if a.Key == "node" {
			node = a.Value.String()
		}
	}
	h.sink.mu.Lock()
	h.sink.nodes = append(h.sink.nodes, node)
	h.sink.mu.Unlock()
	return nil
}

func (h recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return recorder{h.sink, append(slices.Clip(h.attrs), as...)}
}

func (h recorder) WithGroup(string) slog.Handler { return h }

func (s *startedNodes) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.nodes)
}

// TestCrowdTogether: with Together an app fetches its first asset, then
// all the others at once; without, each after the one before has ended.
func TestCrowdTogether(t *testing.T) {
	site := meshtest.GenerateSite(11, map[string]int64{"a": 1000, "b": 2000, "c": 3000, "d": 4000})
	for _, together := range []bool{false, true} {
		o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: site, Latency: 100 * time.Millisecond})
		_, r := runCrowd(t, meshtest.CrowdConfig{Origin: o, Apps: 1, Assets: []string{"a", "b", "c", "d"},
			Together: together, WaitProvider: -1, Neighbours: -1}, time.Minute)
		if len(r.Fetches) != 4 {
			t.Fatalf("together %v: %d fetches, want 4", together, len(r.Fetches))
		}
		f := slices.Clone(r.Fetches)
		slices.SortFunc(f, func(x, y meshtest.FetchReport) int { return strings.Compare(x.Path, y.Path) })
		end := func(x meshtest.FetchReport) time.Duration { return x.Start + x.Duration }
		for _, x := range f[1:] {
			if x.Start < end(f[0]) {
				t.Errorf("together %v: %s began %v before the first asset ended", together, x.Path, end(f[0])-x.Start)
			}
		}
		overlap := f[2].Start < end(f[1]) && f[3].Start < end(f[2])
		if overlap != together {
			t.Errorf("together %v: the assets after the first overlap: %v (starts %v %v %v, ends %v %v %v)", together, overlap,
				f[1].Start, f[2].Start, f[3].Start, end(f[1]), end(f[2]), end(f[3]))
		}
	}
}

// TestSitePathsFrom: the page first, the rest sorted; a path the site does
// not have changes nothing.
func TestSitePathsFrom(t *testing.T) {
	site := meshtest.DemoSite(1, 1<<10)
	got := site.PathsFrom("index.html")
	if got[0] != "index.html" || !slices.IsSorted(got[1:]) || len(got) != len(site) {
		t.Errorf("PathsFrom(index.html) = %v", got)
	}
	if got := site.PathsFrom("none"); !slices.Equal(got, site.Paths()) {
		t.Errorf("PathsFrom(none) = %v, want %v", got, site.Paths())
	}
}

// TestLoadStopsAtCancel: Load starts no fetch once its context has ended.
func TestLoadStopsAtCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var got []string
	meshtest.Load(ctx, []string{"a", "b", "c"}, false, func(p string) {
		got = append(got, p)
		cancel()
	})
	if !slices.Equal(got, []string{"a"}) {
		t.Errorf("fetched %v after the context ended at the first, want [a]", got)
	}
}
