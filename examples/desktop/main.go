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
// is where a real app would tell its webview to reload.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
)

func main() {
	name := flag.String("name", "", "mesh name (required)")
	dir := flag.String("dir", "", "data directory (required)")
	manifestURL := flag.String("manifest", "", "URL of the site's manifest (required)")
	origin := flag.String("origin", "", "origin base URL (default: the manifest's directory)")
	addr := flag.String("addr", "127.0.0.1:8377", "gateway address; keep it on loopback")
	bootstrap := flag.String("bootstrap", "", "comma-separated multiaddrs of seeds")
	recheck := flag.Duration("recheck", 0, "how often to check the manifest (default: the app role's 1m)")
	loopback := flag.Bool("loopback", false, "listen for peers on 127.0.0.1 only, mDNS and UPnP off")
	flag.Parse()
	if *name == "" || *dir == "" || *manifestURL == "" {
		flag.Usage()
		os.Exit(2)
	}
	if *origin == "" {
		*origin = (*manifestURL)[:strings.LastIndex(*manifestURL, "/")]
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
	if err := run(ctx, cfg, *manifestURL, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "desktop:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg mesh.Config, manifestURL, addr string) error {
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
	// Until the first version loads (the origin may be slow or down), the
	// app waits; then the gateway follows every version.
	m, err := f.Wait(ctx)
	if err != nil {
		return err
	}
	events := f.Subscribe(ctx)
	g := n.Gateway(mesh.GatewayConfig{})
	f.Attach(g)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("gateway: http://%s/ (%d assets); peer %s\n", ln.Addr(), len(m.Assets), n.ID())
	go func() {
		for ev := range events {
			switch ev.Kind {
			case mesh.SiteUpdated:
				fmt.Printf("site updated: %d assets now (was %d); the gateway serves the new version\n", len(ev.Manifest.Assets), len(ev.Previous.Assets))
			case mesh.SiteFailed:
				fmt.Fprintln(os.Stderr, "desktop: site check failed (still serving the version in effect):", ev.Err)
			}
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	st := n.Stats()
	fmt.Printf("offload %.3f: %d bytes from peers, %d from the origin\n", st.Offload, st.Fetch.PeerBytes, st.Fetch.OriginBytes)
	return nil
}
