// Command demo runs a whole meshcdn mesh on this machine's loopback and
// measures it: an HTTP origin serving a generated site (a page, images and a
// video), seeds that pin the site, and a flash crowd of app peers arriving
// over a few seconds, each fetching every asset. It prints bytes from peers
// and from the origin per node and in total, time to first byte for peer hits
// and origin fetches, and the offload ratio: bytes from peers over all bytes
// fetched by every node, the seeds' own origin fetches included.
//
//	go run ./examples/demo                 # 1 seed, 20 peers, 50 MiB video
//	go run ./examples/demo -json           # the same figures as one JSON object
//	go run ./examples/demo -peers 1 -seeds 0  # no mesh: everything from the origin
//	go run ./examples/demo -log demo.log   # and every node's debug log, JSON lines
//
// A live dashboard is served on 127.0.0.1 while it runs (its URL is printed);
// -dashboard=false turns it off. Everything listens on 127.0.0.1 only, with
// mDNS and UPnP off.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"text/tabwriter"
	"time"

	logging "github.com/ipfs/go-log/v2"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

type options struct {
	peers, seeds int
	videoMiB     int
	arrival      time.Duration
	poisson      time.Duration
	seed         uint64
	jsonOut      bool
	dashboard    bool
	hold         time.Duration
	uplinkMiB    float64
	latency      time.Duration

	announceFetches mesh.Toggle
	striping        mesh.Toggle
	announceAddrs   mesh.Toggle
	together        bool
	windowMiB       int64
	serveConc       int
	logPath         string
	cpuProfile      string
}

func main() {
	var o options
	flag.IntVar(&o.peers, "peers", 20, "app peers in the flash crowd")
	flag.IntVar(&o.seeds, "seeds", 1, "seeds that pin the site before the crowd arrives")
	flag.IntVar(&o.videoMiB, "video", 50, "size of the video asset in MiB")
	flag.DurationVar(&o.arrival, "arrival", 3*time.Second, "time over which the app peers arrive")
	flag.DurationVar(&o.poisson, "poisson", 0, "if set, the app peers arrive as a Poisson process over this time instead of evenly over -arrival (the benchmark's Poisson crowd)")
	flag.Uint64Var(&o.seed, "seed", 0, "seeds the crowd's random choices (the Poisson schedule, each app's neighbours), so that runs can be repeated or paired; 0: from the clock")
	flag.BoolVar(&o.jsonOut, "json", false, "print the figures as one JSON object")
	flag.BoolVar(&o.dashboard, "dashboard", true, "serve a live dashboard on 127.0.0.1")
	flag.DurationVar(&o.hold, "hold", 0, "keep the dashboard up this long after the run")
	flag.Float64Var(&o.uplinkMiB, "uplink", 25, "the site's internet uplink to the origin in MiB/s, shared by every node (0: unlimited)")
	flag.DurationVar(&o.latency, "latency", 30*time.Millisecond, "origin latency added to each request")
	announce := flag.Bool("announce-fetches", true, "nodes tell the mesh of cold fetches they start (mesh.Config.AnnounceFetches)")
	striping := flag.Bool("striping", true, "nodes fetching the same content at once split the leaves they take from the origin (mesh.Config.FetchStriping)")
	addrs := flag.Bool("announce-addrs", false, "nodes send their addresses with their announcements, so that peers heard of through gossip can be dialled (mesh.Config.AnnounceAddrs)")
	flag.StringVar(&o.logPath, "log", "", "write every node's debug log to this file, as JSON lines naming the node (node=app-07)")
	flag.Int64Var(&o.windowMiB, "window-mib", 0, "MiB each fetch holds in memory ahead of its reader (mesh.Config.FetchWindowBytes; 0: the default 8, -1: no bound)")
	flag.IntVar(&o.serveConc, "serve-concurrency", 0, "block requests each app serves at once (mesh.Config.ServeConcurrency; 0: the default 8)")
	flag.BoolVar(&o.together, "together", false, "each app fetches the page, then all its other assets at once, as a browser does (meshtest.CrowdConfig.Together); default one after another")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (every node) to this file")
	flag.Parse()
	o.announceFetches = toggle(*announce)
	o.striping = toggle(*striping)
	o.announceAddrs = toggle(*addrs)
	if o.peers < 0 || o.seeds < 0 || o.videoMiB < 0 || o.arrival < 0 || o.poisson < 0 {
		fmt.Fprintln(os.Stderr, "demo: negative flag")
		os.Exit(2)
	}
	// boxo logs through go-log, whose default prints errors to stderr;
	// the demo reports its own figures instead.
	logging.SetAllLoggers(logging.LevelFatal)
	if o.cpuProfile != "" {
		stopProfile, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(1)
		}
		defer stopProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		rep.print(os.Stdout)
	}
}

// startCPUProfile starts profiling the process to a new file at path and
// returns what stops it and closes the file.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// nodeReport is one node's figures.
type nodeReport struct {
	Name        string  `json:"name"`
	Role        string  `json:"role"`
	Peer        string  `json:"peer"`
	PeerBytes   int64   `json:"peer_bytes"`
	OriginBytes int64   `json:"origin_bytes"`
	ServedBytes int64   `json:"served_bytes"`
	DupBytes    int64   `json:"duplicate_bytes"` // copies received after another source delivered the block
	Fetches     int     `json:"fetches"`
	TTFBms      float64 `json:"ttfb_median_ms"`
	Done        bool    `json:"done"`
	CompletionS float64 `json:"completion_s,omitempty"` // an app's arrival to the end of its last fetch
	Links       int     `json:"links"`                  // other nodes it was connected to at the end
}

// report is the whole run's figures. CompletionP50 and CompletionP95 are
// over the apps' completions (nodeReport.CompletionS), in seconds: the fetch
// issue's completion figure, which examples/bench's crowd scenario sets
// against the same crowd without the mesh.
type report struct {
	Assets        int          `json:"assets"`
	SiteBytes     int64        `json:"site_bytes"`
	Seeds         int          `json:"seeds"`
	Peers         int          `json:"peers"`
	PeerBytes     int64        `json:"peer_bytes"`
	OriginBytes   int64        `json:"origin_bytes"`
	OriginServed  int64        `json:"origin_served_bytes"`
	Offload       float64      `json:"offload"`
	PeerHits      int          `json:"peer_hit_fetches"`
	OriginFetches int          `json:"origin_fetches"`
	MixedFetches  int          `json:"mixed_fetches"`
	PeerTTFBp50   float64      `json:"peer_ttfb_p50_ms"`
	PeerTTFBp95   float64      `json:"peer_ttfb_p95_ms"`
	OriginTTFBp50 float64      `json:"origin_ttfb_p50_ms"`
	OriginTTFBp95 float64      `json:"origin_ttfb_p95_ms"`
	CompletionP50 float64      `json:"completion_p50_s"`
	CompletionP95 float64      `json:"completion_p95_s"`
	Seconds       float64      `json:"seconds"`
	Nodes         []nodeReport `json:"nodes"`
	AppLinks      []int        `json:"-"` // the apps' Links, fewest first
	DashboardURL  string       `json:"dashboard_url,omitempty"`
	// OriginCopies is what the origin sent per asset path, in copies of
	// that asset: where a crowd's origin egress goes.
	OriginCopies map[string]float64 `json:"origin_copies_by_path"`
}

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node\trole\tfrom peers MiB\tfrom origin MiB\tserved MiB\tTTFB p50 ms\t")
	for _, n := range r.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t\n", n.Name, n.Role, mib(n.PeerBytes), mib(n.OriginBytes), mib(n.ServedBytes), n.TTFBms)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d assets (%.1f MiB), %d seeds, %d app peers, %.1f s\n", r.Assets, mib(r.SiteBytes), r.Seeds, r.Peers, r.Seconds)
	fmt.Fprintf(w, "app completion:    p50 %6.1f s   p95 %6.1f s\n", r.CompletionP50, r.CompletionP95)
	if ls := r.AppLinks; len(ls) > 0 {
		fmt.Fprintf(w, "app links:         min %d, median %d, max %d other nodes\n", ls[0], ls[(len(ls)-1)/2], ls[len(ls)-1])
	}
	fmt.Fprintf(w, "bytes from peers:  %8.1f MiB\n", mib(r.PeerBytes))
	fmt.Fprintf(w, "bytes from origin: %8.1f MiB (the origin sent %.1f MiB)\n", mib(r.OriginBytes), mib(r.OriginServed))
	fmt.Fprintf(w, "TTFB peer hits:    p50 %6.1f ms  p95 %6.1f ms  (%d fetches)\n", r.PeerTTFBp50, r.PeerTTFBp95, r.PeerHits)
	fmt.Fprintf(w, "TTFB origin:       p50 %6.1f ms  p95 %6.1f ms  (%d fetches)\n", r.OriginTTFBp50, r.OriginTTFBp95, r.OriginFetches)
	if r.MixedFetches > 0 {
		fmt.Fprintf(w, "fetches with bytes from both: %d\n", r.MixedFetches)
	}
	fmt.Fprintf(w, "offload ratio:     %.3f\n", r.Offload)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func run(ctx context.Context, o options, out io.Writer) (*report, error) {
	start := time.Now()
	site := meshtest.DemoSite(42, int64(o.videoMiB)<<20)
	org, err := meshtest.NewOrigin(meshtest.OriginConfig{
		Site:           site,
		BytesPerSecond: int64(o.uplinkMiB * (1 << 20)),
		Latency:        o.latency,
	})
	if err != nil {
		return nil, err
	}
	defer org.Close()
	// Every node: gossip finds everything in one process, so no DHT.
	cfg := mesh.Config{Name: "demo", DisableDHT: true, AnnounceFetches: o.announceFetches, FetchStriping: o.striping, AnnounceAddrs: o.announceAddrs, FetchWindowBytes: o.windowMiB << 20}
	if o.logPath != "" {
		f, err := os.Create(o.logPath)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		// Records at debug level include each fetch's "fetch ended" summary:
		// where its leaves came from and why the origin joined.
		cfg.Logger = slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ccfg := meshtest.CrowdConfig{
		Origin: org, Seeds: o.seeds, Apps: o.peers, Seed: cfg, App: cfg,
		// The flash crowd: app peers arrive spread over o.arrival, each
		// knowing the seeds and a few peers that came before it (as mDNS
		// would on a LAN), and fetch the whole site.
		Arrival:  meshtest.Staggered(o.arrival),
		Rand:     o.seed,
		Together: o.together,
	}
	if ccfg.Rand == 0 {
		ccfg.Rand = uint64(time.Now().UnixNano())
	}
	if o.poisson > 0 {
		ccfg.Arrival = meshtest.Poisson(o.poisson, ccfg.Rand)
	}
	ccfg.App.ServeConcurrency = o.serveConc
	if o.together {
		ccfg.Assets = site.PathsFrom("index.html") // the page, then what it names
	}
	crowd, err := meshtest.NewCrowd(ccfg)
	if err != nil {
		return nil, err
	}
	defer crowd.Close()
	snapshot := func() *report { return collect(crowd.Report(), org, start) }
	var dashURL string
	if o.dashboard {
		url, closeDash, err := startDashboard(func() *report {
			r := snapshot()
			r.DashboardURL = dashURL
			return r
		})
		if err != nil {
			return nil, err
		}
		defer closeDash()
		dashURL = url
		if !o.jsonOut {
			fmt.Fprintf(out, "dashboard: %s\n", url)
		}
	}
	if _, err := crowd.Run(ctx); err != nil {
		return nil, err
	}
	final := snapshot()
	final.DashboardURL = dashURL
	if o.dashboard && o.hold > 0 {
		select {
		case <-time.After(o.hold):
		case <-ctx.Done():
		}
	}
	return final, nil
}

// collect builds the demo's report from the crowd's.
func collect(cr *meshtest.Report, org *meshtest.Origin, start time.Time) *report {
	r := &report{Assets: cr.Assets, SiteBytes: cr.SiteBytes, Seeds: cr.Seeds, Peers: cr.Apps,
		PeerBytes: cr.PeerBytes, OriginBytes: cr.OriginBytes, OriginServed: org.Sent(), Offload: cr.Offload}
	r.OriginCopies = map[string]float64{}
	site := org.Site()
	for p, ps := range org.Stats().Paths {
		if n := len(site[p]); n > 0 {
			r.OriginCopies[p] = float64(ps.Sent) / float64(n)
		}
	}
	byNode := map[string][]time.Duration{}
	for _, f := range cr.Fetches {
		byNode[f.Node] = append(byNode[f.Node], f.TTFB)
		switch f.Source() {
		case "peer":
			r.PeerHits++
		case "origin":
			r.OriginFetches++
		case "mixed":
			r.MixedFetches++
		}
	}
	for _, n := range cr.Nodes {
		nr := nodeReport{
			Name: n.Name, Role: string(n.Role), Peer: n.Peer,
			PeerBytes: n.Stats.Fetch.PeerBytes, OriginBytes: n.Stats.Fetch.OriginBytes, ServedBytes: n.Stats.Fetch.ServedBytes,
			DupBytes: n.Stats.Fetch.DuplicateBytes,
			Fetches:  n.Fetches, TTFBms: ms(meshtest.Percentile(byNode[n.Name], 0.5)), Done: n.Done > 0, Links: n.Links,
		}
		if n.Role == mesh.RoleApp && n.Done > 0 {
			nr.CompletionS = (n.Done - n.Arrival).Seconds()
		}
		r.Nodes = append(r.Nodes, nr)
	}
	r.AppLinks = cr.AppLinks()
	done := cr.Completions()
	r.CompletionP50, r.CompletionP95 = meshtest.Percentile(done, 0.5).Seconds(), meshtest.Percentile(done, 0.95).Seconds()
	peer := cr.TTFBs(func(f meshtest.FetchReport) bool { return f.Source() == "peer" })
	origin := cr.TTFBs(func(f meshtest.FetchReport) bool { return f.Source() == "origin" })
	r.PeerTTFBp50, r.PeerTTFBp95 = ms(meshtest.Percentile(peer, 0.5)), ms(meshtest.Percentile(peer, 0.95))
	r.OriginTTFBp50, r.OriginTTFBp95 = ms(meshtest.Percentile(origin, 0.5)), ms(meshtest.Percentile(origin, 0.95))
	r.Seconds = time.Since(start).Seconds()
	return r
}

// toggle is the mesh.Toggle of a boolean flag.
func toggle(on bool) mesh.Toggle {
	if on {
		return mesh.On
	}
	return mesh.Off
}
