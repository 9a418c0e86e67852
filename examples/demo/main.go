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
//
// A live dashboard is served on 127.0.0.1 while it runs (its URL is printed);
// -dashboard=false turns it off. Everything listens on 127.0.0.1 only, with
// mDNS and UPnP off.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/ipfs/go-cid"
	logging "github.com/ipfs/go-log/v2"
	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
)

type options struct {
	peers, seeds int
	videoMiB     int
	arrival      time.Duration
	jsonOut      bool
	dashboard    bool
	hold         time.Duration
	uplinkMiB    float64
	latency      time.Duration

	announceFetches mesh.Toggle
}

func main() {
	var o options
	flag.IntVar(&o.peers, "peers", 20, "app peers in the flash crowd")
	flag.IntVar(&o.seeds, "seeds", 1, "seeds that pin the site before the crowd arrives")
	flag.IntVar(&o.videoMiB, "video", 50, "size of the video asset in MiB")
	flag.DurationVar(&o.arrival, "arrival", 3*time.Second, "time over which the app peers arrive")
	flag.BoolVar(&o.jsonOut, "json", false, "print the figures as one JSON object")
	flag.BoolVar(&o.dashboard, "dashboard", true, "serve a live dashboard on 127.0.0.1")
	flag.DurationVar(&o.hold, "hold", 0, "keep the dashboard up this long after the run")
	flag.Float64Var(&o.uplinkMiB, "uplink", 25, "the site's internet uplink to the origin in MiB/s, shared by every node (0: unlimited)")
	flag.DurationVar(&o.latency, "latency", 30*time.Millisecond, "origin latency added to each request")
	announce := flag.Bool("announce-fetches", true, "nodes tell the mesh of cold fetches they start (mesh.Config.AnnounceFetches)")
	flag.Parse()
	o.announceFetches = mesh.Off
	if *announce {
		o.announceFetches = mesh.On
	}
	if o.peers < 0 || o.seeds < 0 || o.videoMiB < 0 || o.arrival < 0 {
		fmt.Fprintln(os.Stderr, "demo: negative flag")
		os.Exit(2)
	}
	// boxo logs through go-log, whose default prints errors to stderr;
	// the demo reports its own figures instead.
	logging.SetAllLoggers(logging.LevelFatal)
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

// nodeReport is one node's figures.
type nodeReport struct {
	Name        string  `json:"name"`
	Role        string  `json:"role"`
	Peer        string  `json:"peer"`
	PeerBytes   int64   `json:"peer_bytes"`
	OriginBytes int64   `json:"origin_bytes"`
	ServedBytes int64   `json:"served_bytes"`
	Fetches     int     `json:"fetches"`
	TTFBms      float64 `json:"ttfb_median_ms"`
	Done        bool    `json:"done"`
}

// report is the whole run's figures.
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
	Seconds       float64      `json:"seconds"`
	Nodes         []nodeReport `json:"nodes"`
	DashboardURL  string       `json:"dashboard_url,omitempty"`
}

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node\trole\tfrom peers MiB\tfrom origin MiB\tserved MiB\tTTFB p50 ms\t")
	for _, n := range r.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t\n", n.Name, n.Role, mib(n.PeerBytes), mib(n.OriginBytes), mib(n.ServedBytes), n.TTFBms)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d assets (%.1f MiB), %d seeds, %d app peers, %.1f s\n", r.Assets, mib(r.SiteBytes), r.Seeds, r.Peers, r.Seconds)
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

func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return ms(s[i])
}

// site generates the demo's assets in memory.
func site(videoMiB int) map[string][]byte {
	rng := rand.New(rand.NewChaCha8([32]byte{42}))
	gen := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	files := map[string][]byte{
		"index.html":   []byte("<!doctype html><title>meshcdn demo</title><img src=img/hero.jpg><video src=video/intro.mp4></video>\n"),
		"app.js":       gen(300 << 10),
		"img/hero.jpg": gen(2<<20 + 123),
		"img/logo.png": gen(40 << 10),
	}
	for i := range 4 {
		files[fmt.Sprintf("img/photo-%d.jpg", i)] = gen(700<<10 + i)
	}
	files["video/intro.mp4"] = gen(videoMiB << 20)
	return files
}

// origin serves the site and its manifest on 127.0.0.1, counting bytes sent.
type origin struct {
	srv  *http.Server
	url  string
	sent atomic.Int64
}

func startOrigin(ctx context.Context, files map[string][]byte, uplinkMiB float64, latency time.Duration) (*origin, *manifest.Manifest, error) {
	m := &manifest.Manifest{Version: manifest.Version, Profile: manifest.Profile}
	for p, data := range files {
		a, err := manifest.FromReader(ctx, bytes.NewReader(data))
		if err != nil {
			return nil, nil, err
		}
		a.Path = p
		a.Type = http.DetectContentType(data)
		if ext := p[len(p)-3:]; ext == "tml" {
			a.Type = "text/html; charset=utf-8"
		}
		m.Assets = append(m.Assets, a)
	}
	sort.Slice(m.Assets, func(i, j int) bool { return m.Assets[i].Path < m.Assets[j].Path })
	mj, err := m.Marshal()
	if err != nil {
		return nil, nil, err
	}
	// Parse it back, as a client would: this also indexes the paths.
	if m, err = manifest.Parse(mj); err != nil {
		return nil, nil, err
	}
	o := &origin{}
	var uplink *rate.Limiter
	if uplinkMiB > 0 {
		uplink = rate.NewLimiter(rate.Limit(uplinkMiB*(1<<20)), 64<<10)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	o.url = "http://" + ln.Addr().String()
	o.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path[1:]
		if p == "manifest.json" {
			w.Write(mj)
			return
		}
		data, ok := files[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
		http.ServeContent(&countingWriter{w, &o.sent, uplink, r.Context()}, r, p, time.Time{}, bytes.NewReader(data))
	})}
	go o.srv.Serve(ln)
	return o, m, nil
}

// countingWriter counts the bytes the origin sends and paces them through
// the shared uplink, in pieces no larger than its burst.
type countingWriter struct {
	http.ResponseWriter
	n      *atomic.Int64
	uplink *rate.Limiter
	ctx    context.Context
}

func (c *countingWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), 32<<10)]
		if c.uplink != nil {
			if err := c.uplink.WaitN(c.ctx, len(chunk)); err != nil {
				return written, err
			}
		}
		n, err := c.ResponseWriter.Write(chunk)
		c.n.Add(int64(n))
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// member is a node of the demo with its fetch results.
type member struct {
	name    string
	role    mesh.Role
	node    *mesh.Node
	mu      sync.Mutex
	fetches []fetch.Stats
	done    bool
}

func (mb *member) ttfbs() []time.Duration {
	var ds []time.Duration
	for _, f := range mb.fetches {
		ds = append(ds, f.TTFB)
	}
	return ds
}

func run(ctx context.Context, o options, out io.Writer) (*report, error) {
	start := time.Now()
	files := site(o.videoMiB)
	org, m, err := startOrigin(ctx, files, o.uplinkMiB, o.latency)
	if err != nil {
		return nil, err
	}
	defer org.srv.Close()
	rep := &report{Assets: len(m.Assets), Seeds: o.seeds, Peers: o.peers}
	for _, a := range m.Assets {
		rep.SiteBytes += a.Size
	}

	var mu sync.Mutex
	var members []*member
	snapshot := func() *report { return collect(rep, members, &mu, org, start) }
	if o.dashboard {
		url, closeDash, err := startDashboard(snapshot)
		if err != nil {
			return nil, err
		}
		defer closeDash()
		rep.DashboardURL = url
		if !o.jsonOut {
			fmt.Fprintf(out, "dashboard: %s\n", url)
		}
	}

	newMember := func(name string, role mesh.Role, bootstrap []string) (*member, error) {
		n, err := mesh.New(ctx, mesh.Config{
			Name:            "demo",
			Role:            role,
			InMemory:        true,
			Origin:          org.url,
			ListenAddrs:     mesh.LoopbackAddrs(role),
			Bootstrap:       bootstrap,
			MDNS:            mesh.Off,
			NATPortMap:      mesh.Off,
			DisableDHT:      true, // gossip finds everything in one process
			AnnounceFetches: o.announceFetches,
		})
		if err != nil {
			return nil, err
		}
		mb := &member{name: name, role: role, node: n}
		mu.Lock()
		members = append(members, mb)
		mu.Unlock()
		return mb, nil
	}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, mb := range members {
			mb.node.Close()
		}
	}()

	// Seeds come first and pin the site from the origin.
	var seedAddrs []string
	for i := range o.seeds {
		mb, err := newMember(fmt.Sprintf("seed-%d", i+1), mesh.RoleSeed, seedAddrs)
		if err != nil {
			return nil, err
		}
		if err := fetchAll(ctx, mb, m); err != nil {
			return nil, fmt.Errorf("%s: %w", mb.name, err)
		}
		if err := mb.node.Pin(ctx, m); err != nil {
			return nil, fmt.Errorf("%s: %w", mb.name, err)
		}
		seedAddrs = append(seedAddrs, mb.node.Addrs()[0].String())
	}

	// The flash crowd: app peers arrive spread over o.arrival, each knowing
	// the seeds and a few peers that came before it (as mDNS would on a
	// LAN), and fetch the whole site.
	var wg sync.WaitGroup
	errs := make(chan error, o.peers)
	var apps []string
	for i := range o.peers {
		if o.peers > 1 && i > 0 {
			select {
			case <-time.After(o.arrival / time.Duration(o.peers-1)):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		boot := append([]string(nil), seedAddrs...)
		for _, j := range rand.Perm(len(apps))[:min(3, len(apps))] {
			boot = append(boot, apps[j])
		}
		mb, err := newMember(fmt.Sprintf("app-%02d", i+1), mesh.RoleApp, boot)
		if err != nil {
			return nil, err
		}
		apps = append(apps, mb.node.Addrs()[0].String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if len(boot) > 0 {
				// An app joins the mesh when it starts and loads the
				// site a moment later: wait (at most a second) until it
				// has heard who holds the site.
				wctx, cancel := context.WithTimeout(ctx, time.Second)
				if mb.node.WaitPeers(wctx, 1) == nil {
					waitProvider(wctx, mb.node, m.Assets[len(m.Assets)-1].Cid)
				}
				cancel()
			}
			if err := fetchAll(ctx, mb, m); err != nil {
				errs <- fmt.Errorf("%s: %w", mb.name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return nil, err
	}
	final := snapshot()
	if o.dashboard && o.hold > 0 {
		select {
		case <-time.After(o.hold):
		case <-ctx.Done():
		}
	}
	return final, nil
}

// waitProvider waits until the node's provider table lists a holder of c.
func waitProvider(ctx context.Context, n *mesh.Node, c cid.Cid) {
	t := n.Announcer().Table()
	changes := t.Subscribe(ctx)
	for len(t.Providers(c, 1)) == 0 {
		select {
		case <-changes:
		case <-ctx.Done():
			return
		}
	}
}

// fetchAll fetches every asset of m through the member's node, in manifest
// order, reading each to the end.
func fetchAll(ctx context.Context, mb *member, m *manifest.Manifest) error {
	for _, a := range m.Assets {
		r, _, err := mb.node.OpenAsset(ctx, m, a.Path)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, r)
		st := r.Stats()
		r.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", a.Path, err)
		}
		if n != a.Size {
			return fmt.Errorf("%s: read %d bytes, want %d", a.Path, n, a.Size)
		}
		mb.mu.Lock()
		mb.fetches = append(mb.fetches, st)
		mb.mu.Unlock()
	}
	mb.mu.Lock()
	mb.done = true
	mb.mu.Unlock()
	return nil
}

// collect builds the report from every node's own accounting.
func collect(base *report, members []*member, mu *sync.Mutex, org *origin, start time.Time) *report {
	mu.Lock()
	ms := append([]*member(nil), members...)
	mu.Unlock()
	r := &report{Assets: base.Assets, SiteBytes: base.SiteBytes, Seeds: base.Seeds, Peers: base.Peers, DashboardURL: base.DashboardURL}
	var peerTTFB, originTTFB []time.Duration
	for _, mb := range ms {
		st := mb.node.Stats()
		mb.mu.Lock()
		nr := nodeReport{
			Name: mb.name, Role: string(mb.role), Peer: mb.node.ID().String(),
			PeerBytes: st.Fetch.PeerBytes, OriginBytes: st.Fetch.OriginBytes, ServedBytes: st.Fetch.ServedBytes,
			Fetches: len(mb.fetches), TTFBms: percentile(mb.ttfbs(), 0.5), Done: mb.done,
		}
		fetches := append([]fetch.Stats(nil), mb.fetches...)
		mb.mu.Unlock()
		r.Nodes = append(r.Nodes, nr)
		r.PeerBytes += st.Fetch.PeerBytes
		r.OriginBytes += st.Fetch.OriginBytes
		for _, f := range fetches {
			switch {
			case f.OriginBytes == 0 && f.PeerBytes > 0:
				r.PeerHits++
				peerTTFB = append(peerTTFB, f.TTFB)
			case f.PeerBytes == 0 && f.OriginBytes > 0:
				r.OriginFetches++
				originTTFB = append(originTTFB, f.TTFB)
			case f.PeerBytes > 0:
				r.MixedFetches++
			}
		}
	}
	r.PeerTTFBp50, r.PeerTTFBp95 = percentile(peerTTFB, 0.5), percentile(peerTTFB, 0.95)
	r.OriginTTFBp50, r.OriginTTFBp95 = percentile(originTTFB, 0.5), percentile(originTTFB, 0.95)
	if r.PeerBytes+r.OriginBytes > 0 {
		r.Offload = float64(r.PeerBytes) / float64(r.PeerBytes+r.OriginBytes)
	}
	r.OriginServed = org.sent.Load()
	r.Seconds = time.Since(start).Seconds()
	return r
}
