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
// the gateway serves them.
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
	loopback := flag.Bool("loopback", false, "listen for peers on 127.0.0.1 only, mDNS and UPnP off")
	flag.Parse()
	if *name == "" || *dir == "" || *manifestURL == "" {
		flag.Usage()
		os.Exit(2)
	}
	if *origin == "" {
		*origin = (*manifestURL)[:strings.LastIndex(*manifestURL, "/")]
	}
	cfg := mesh.Config{Name: *name, DataDir: *dir, Origin: *origin}
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
	m, err := n.LoadManifest(ctx, manifestURL)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: n.Gateway(mesh.GatewayConfig{Manifest: m}), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("gateway: http://%s/ (%d assets); peer %s\n", ln.Addr(), len(m.Assets), n.ID())
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
