// Command seed runs a kiosk seed: a node in the seed role that follows the
// site's manifest URL (mesh.Node.Follow): it pins every asset of the
// current version, checks the manifest again every -recheck (If-None-Match:
// an unchanged manifest costs a 304), unpins what left the site before
// fetching a new version (so a quota that fits one version and a bit takes
// a redeploy), serves the mesh, and survives restarts (what it stored is
// not fetched again; what left the site while it was down is unpinned).
//
//	go run ./examples/seed -name acme-site -dir /var/lib/meshcdn \
//	    -manifest https://cdn.example.com/manifest.json
//
// It listens on every browser-dialable transport (TCP, QUIC, WebTransport,
// WebRTC-direct, WebSockets) and runs a circuit relay so that browsers can
// reach each other, with the seed role's relay limits (mesh.RelayLimits:
// 256 browsers behind one address, 1024 reservations in all). -loopback
// keeps it on 127.0.0.1 for trying it out.
// -listen fixes the addresses (comma-separated multiaddrs, ports included):
// with the same -dir (its identity) and -listen, a restarted seed has the
// same multiaddrs, WebRTC-direct's certificate hash included (go-libp2p
// derives that certificate from the identity key), so the addresses apps
// store as Bootstrap keep working:
//
//	go run ./examples/seed -name acme-site -dir /var/lib/meshcdn \
//	    -manifest https://cdn.example.com/manifest.json \
//	    -listen /ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1,/ip4/0.0.0.0/udp/4001/quic-v1/webtransport,/ip4/0.0.0.0/udp/4002/webrtc-direct
//
// -browser DIR also serves the built browser client (examples/browser/dist,
// built with `npm ci && npm run build` there) over HTTP on -browser-addr
// (127.0.0.1 only), with /meshcdn.json beside it: the mesh's name, the
// seed's browser-dialable multiaddrs (read at each request: the ports
// change between starts unless -listen fixes them, and WebTransport's
// certificate hash every 14 days) and the manifest's URL. Opening the printed URL shows the whole
// mesh from one command; the origin must allow the page's origin (CORS) for
// the manifest and Range requests.
//
// -metrics ADDR serves Prometheus metrics at http://ADDR/metrics (a
// loopback address; put a reverse proxy in front to scrape it from
// elsewhere): the node's (meshcdn_*: bytes by source, store usage, peers),
// Go's (go_goroutines, go_memstats_*) and the process's
// (process_resident_memory_bytes, process_open_fds), what a kiosk seed left
// alone for weeks is watched by.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshcdn/meshcdn/internal/siteurl"
	"github.com/meshcdn/meshcdn/mesh"
)

func main() {
	name := flag.String("name", "", "mesh name (required)")
	dir := flag.String("dir", "", "data directory: identity and stored content (required)")
	manifestURL := flag.String("manifest", "", "URL of the site's manifest (required)")
	origin := flag.String("origin", "", "origin base URL (default: the manifest's directory)")
	recheck := flag.Duration("recheck", 0, "how often to check the manifest (default: the seed role's 30s)")
	loopback := flag.Bool("loopback", false, "listen on 127.0.0.1 only, mDNS off")
	quota := flag.Int64("quota-mib", 0, "store quota in MiB (default: the seed role's 8 GiB)")
	bootstrap := flag.String("bootstrap", "", "comma-separated multiaddrs of other seeds")
	listen := flag.String("listen", "", "comma-separated multiaddrs to listen on, ports fixed so that the seed's multiaddrs survive restarts (default: the seed role's; with -loopback, 127.0.0.1 with ports chosen by the system)")
	browser := flag.String("browser", "", "directory of the built browser client to serve (examples/browser/dist)")
	browserAddr := flag.String("browser-addr", "127.0.0.1:8090", "where -browser serves the page: a 127.0.0.1 address")
	metricsAddr := flag.String("metrics", "", "serve Prometheus metrics (the node's, Go's and the process's) at http://ADDR/metrics: a loopback address such as 127.0.0.1:9464")
	flag.Parse()
	if *name == "" || *dir == "" || *manifestURL == "" {
		flag.Usage()
		os.Exit(2)
	}
	if *origin == "" {
		o, err := siteurl.Origin("manifest", *manifestURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "seed:", err)
			os.Exit(2)
		}
		*origin = o
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := mesh.Config{Name: *name, Role: mesh.RoleSeed, DataDir: *dir, Origin: *origin, Quota: *quota << 20, FollowInterval: *recheck, Logger: log}
	if *bootstrap != "" {
		cfg.Bootstrap = strings.Split(*bootstrap, ",")
	}
	if *loopback {
		cfg.ListenAddrs = mesh.LoopbackAddrs(mesh.RoleSeed)
		cfg.MDNS = mesh.Off
	}
	if *listen != "" {
		cfg.ListenAddrs = strings.Split(*listen, ",") // mesh.New names a bad entry
	}
	if *metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		cfg.PrometheusRegisterer = reg
		stop, err := serveMetrics(*metricsAddr, reg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "seed:", err)
			os.Exit(2)
		}
		defer stop()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	page := pageConfig{dir: *browser, addr: *browserAddr, manifest: *manifestURL}
	if err := run(ctx, cfg, *manifestURL, page); err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg mesh.Config, manifestURL string, page pageConfig) error {
	n, err := mesh.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	fmt.Println("seed", n.ID())
	for _, a := range n.Addrs() {
		fmt.Println("  listening on", a)
	}
	if page.dir != "" {
		stop, err := servePage(n, cfg.Name, page)
		if err != nil {
			return err
		}
		defer stop()
	}
	f, err := n.Follow(mesh.FollowConfig{URL: manifestURL, OnEvent: func(ev mesh.SiteEvent) { report(n, ev) }})
	if err != nil {
		return err
	}
	defer f.Close()
	<-ctx.Done()
	return nil
}

// report prints what happened to the site.
func report(n *mesh.Node, ev mesh.SiteEvent) {
	switch ev.Kind {
	case mesh.SiteUpdated:
		fmt.Printf("site: new version, %d assets; %d roots of the old one unpinned\n", len(ev.Manifest.Assets), ev.Unpinned)
	case mesh.SitePinned:
		st := n.Stats()
		fmt.Printf("pinned %d assets: %d bytes from the origin, %d from peers this round; %d bytes stored of %d, %d served\n",
			len(ev.Manifest.Assets), ev.OriginBytes, ev.Fetched-ev.OriginBytes, st.Store.Used, st.Store.Quota, st.Fetch.ServedBytes)
	case mesh.SiteFailed:
		// Keep serving what is stored; the next check tries again.
		fmt.Fprintln(os.Stderr, "seed: site check failed:", ev.Err)
	}
}

type pageConfig struct{ dir, addr, manifest string }

// servePage serves the browser client from page.dir and /meshcdn.json, the
// settings the page reads when its URL has none.
func servePage(n *mesh.Node, name string, page pageConfig) (func(), error) {
	if _, err := os.Stat(page.dir + "/main.js"); err != nil {
		return nil, fmt.Errorf("-browser %s: %w (build it: cd examples/browser && npm ci && npm run build)", page.dir, err)
	}
	ln, err := listenLoopback("browser-addr", page.addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/meshcdn.json", func(w http.ResponseWriter, r *http.Request) {
		var addrs []string
		for _, a := range n.Addrs() {
			s := a.String()
			if strings.Contains(s, "/webtransport/") || strings.Contains(s, "/webrtc-direct/") || strings.Contains(s, "/ws/") {
				addrs = append(addrs, s)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(map[string]any{"name": name, "peer": n.ID().String(), "addrs": addrs, "manifest": page.manifest})
	})
	mux.Handle("/", http.FileServer(http.Dir(page.dir)))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Printf("browser page: http://%s/\n", ln.Addr())
	return func() { srv.Close() }, nil
}

// listenLoopback listens on addr, which the flag named flagName gave: a
// loopback address only.
func listenLoopback(flagName, addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		return nil, fmt.Errorf("-%s %q: want a loopback address such as 127.0.0.1:PORT", flagName, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-%s: %w", flagName, err)
	}
	return ln, nil
}

// serveMetrics serves reg's metrics at http://addr/metrics.
func serveMetrics(addr string, reg *prometheus.Registry) (func(), error) {
	ln, err := listenLoopback("metrics", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Printf("metrics: http://%s/metrics\n", ln.Addr())
	return func() { srv.Close() }, nil
}
