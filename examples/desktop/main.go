// Command desktop embeds meshcdn the way a desktop app or an Electron backend
// does: a node in the app role and a local HTTP gateway on 127.0.0.1 that the
// app's webview or renderer loads assets from.
//
//	go run ./examples/desktop -name acme-site -dir ~/.cache/acme-meshcdn \
//	    -manifest https://cdn.example.com/manifest.json
//	# then load http://127.0.0.1:8377/index.html in the webview
//
// Every asset is fetched from peers of the mesh first and from the origin
// when they are not fast enough; bytes are checked against their CIDs before
// the gateway serves them. The app follows the site's manifest URL
// (mesh.Node.Follow, checked every minute): when the site is redeployed, the
// gateway swaps to the new version at once and the program says so, which
// is where a real app would tell its webview to reload. Before serving, it
// waits (up to -ready) until the node knows what its seeds hold, so that
// the first page load already comes from the mesh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshcdn/meshcdn/internal/siteurl"
	"github.com/meshcdn/meshcdn/mesh"
)

func main() {
	name := flag.String("name", "", "mesh name (required)")
	dir := flag.String("dir", "", "data directory (required)")
	manifestURL := flag.String("manifest", "", "URL of the site's manifest (required)")
	origin := flag.String("origin", "", "origin base URL (default: the manifest's directory)")
	addr := flag.String("addr", "127.0.0.1:8377", "gateway address; keep it on loopback")
	bootstrap := flag.String("bootstrap", "", "comma-separated multiaddrs of seeds (the manifest's seeds are added)")
	recheck := flag.Duration("recheck", 0, "how often to check the manifest (default: the app role's 1m)")
	ready := flag.Duration("ready", 5*time.Second, "how long to wait for the mesh before serving")
	loopback := flag.Bool("loopback", false, "listen for peers on 127.0.0.1 only, mDNS and UPnP off")
	flag.Parse()
	if *name == "" || *dir == "" || *manifestURL == "" {
		flag.Usage()
		os.Exit(2)
	}
	if *origin == "" {
		o, err := siteurl.Origin("manifest", *manifestURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "desktop:", err)
			os.Exit(2)
		}
		*origin = o
	}
	cfg := mesh.Config{Name: *name, DataDir: *dir, Origin: *origin, FollowInterval: *recheck}
	if *bootstrap != "" {
		cfg.Bootstrap = strings.Split(*bootstrap, ",")
	}
	if *loopback {
		cfg.ListenAddrs = mesh.LoopbackAddrs(mesh.RoleApp)
		cfg.MDNS, cfg.NATPortMap = mesh.Off, mesh.Off
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err == nil {
		err = run(ctx, cfg, *manifestURL, ln, app{out: os.Stdout, errOut: os.Stderr, ready: *ready})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "desktop:", err)
		os.Exit(1)
	}
}

// app is what run reports to, and the hooks a test watches it with.
type app struct {
	out, errOut io.Writer
	// ready bounds the wait for the mesh before the gateway serves.
	ready time.Duration
	// started, if set, is called with the node once the gateway serves.
	started func(*mesh.Node)
	// event, if set, is called with every site event after it is reported.
	event func(mesh.SiteEvent)
}

// run runs the app until ctx ends: a node, following manifestURL, whose
// gateway serves on ln (which run closes).
func run(ctx context.Context, cfg mesh.Config, manifestURL string, ln net.Listener, a app) error {
	defer ln.Close()
	n, err := mesh.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	f, err := n.Follow(mesh.FollowConfig{URL: manifestURL})
	if err != nil {
		return err
	}
	defer f.Close()
	// Site events are told from the start: a manifest that does not load
	// (a wrong URL, the origin down) is said at once, not after the wait.
	ectx, stopEvents := context.WithCancel(ctx)
	events := f.Subscribe(ectx)
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		a.report(events)
	}()
	stopReport := func() { stopEvents(); <-reported }
	defer stopReport()
	// Until the first version loads (the origin may be slow or down), the
	// app waits; then the gateway follows every version.
	m, err := f.Wait(ctx)
	if err != nil {
		return err
	}
	// The first page load should use the mesh: wait (bounded) until the
	// node knows what its seeds (configured, and the manifest's) hold.
	rctx, cancel := context.WithTimeout(ctx, a.ready)
	err = n.Ready(rctx)
	cancel()
	if err != nil {
		fmt.Fprintln(a.errOut, "desktop: the mesh is not ready, serving anyway (first loads may come from the origin):", err)
	}
	g := n.Gateway(mesh.GatewayConfig{})
	f.Attach(g)
	srv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(a.out, "gateway: http://%s/ (%d assets); peer %s\n", ln.Addr(), len(m.Assets), n.ID())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if a.started != nil {
		a.started(n)
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	stopReport()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	st := n.Stats()
	fmt.Fprintf(a.out, "offload %.3f: %d bytes from peers, %d from the origin\n", st.Offload, st.Fetch.PeerBytes, st.Fetch.OriginBytes)
	return nil
}

// report says what happens to the site, until events ends; a.event hears
// of every event after the first version took effect.
func (a app) report(events <-chan mesh.SiteEvent) {
	for ev := range events {
		switch {
		case ev.Kind == mesh.SiteUpdated && ev.Previous == nil:
			continue // the first version: run says it serves
		case ev.Kind == mesh.SiteFailed && ev.Manifest == nil:
			fmt.Fprintln(a.errOut, "desktop: the site's manifest did not load (trying again):", ev.Err)
			continue
		case ev.Kind == mesh.SiteUpdated:
			fmt.Fprintf(a.out, "site updated: %d assets now (was %d); the gateway serves the new version\n", len(ev.Manifest.Assets), len(ev.Previous.Assets))
		case ev.Kind == mesh.SiteFailed:
			fmt.Fprintln(a.errOut, "desktop: site check failed (still serving the version in effect):", ev.Err)
		}
		if a.event != nil {
			a.event(ev)
		}
	}
}
