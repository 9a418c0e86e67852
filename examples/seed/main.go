// Command seed runs a kiosk seed: a node in the seed role that pins every
// asset a manifest lists, checks the manifest again periodically, serves the
// mesh, and survives restarts (what it stored is not fetched again).
//
//	go run ./examples/seed -name acme-site -dir /var/lib/meshcdn \
//	    -manifest https://cdn.example.com/manifest.json
//
// It listens on every browser-dialable transport (TCP, QUIC, WebTransport,
// WebRTC-direct, WebSockets) and runs a circuit relay so that browsers can
// reach each other. -loopback keeps it on 127.0.0.1 for trying it out.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
)

func main() {
	name := flag.String("name", "", "mesh name (required)")
	dir := flag.String("dir", "", "data directory: identity and stored content (required)")
	manifestURL := flag.String("manifest", "", "URL of the site's manifest (required)")
	origin := flag.String("origin", "", "origin base URL (default: the manifest's directory)")
	recheck := flag.Duration("recheck", 5*time.Minute, "how often to fetch the manifest again")
	loopback := flag.Bool("loopback", false, "listen on 127.0.0.1 only, mDNS off")
	quota := flag.Int64("quota-mib", 0, "store quota in MiB (default: the seed role's 8 GiB)")
	bootstrap := flag.String("bootstrap", "", "comma-separated multiaddrs of other seeds")
	flag.Parse()
	if *name == "" || *dir == "" || *manifestURL == "" {
		flag.Usage()
		os.Exit(2)
	}
	if *origin == "" {
		*origin = (*manifestURL)[:strings.LastIndex(*manifestURL, "/")]
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := mesh.Config{Name: *name, Role: mesh.RoleSeed, DataDir: *dir, Origin: *origin, Quota: *quota << 20, Logger: log}
	if *bootstrap != "" {
		cfg.Bootstrap = strings.Split(*bootstrap, ",")
	}
	if *loopback {
		cfg.ListenAddrs = mesh.LoopbackAddrs(mesh.RoleSeed)
		cfg.MDNS = mesh.Off
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, *manifestURL, *recheck); err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg mesh.Config, manifestURL string, recheck time.Duration) error {
	n, err := mesh.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	fmt.Println("seed", n.ID())
	for _, a := range n.Addrs() {
		fmt.Println("  listening on", a)
	}
	for {
		if err := pin(ctx, n, manifestURL); err != nil {
			// Keep serving what is stored; try again at the next check.
			slog.Default().Error("pinning the manifest failed", "err", err)
			fmt.Fprintln(os.Stderr, "seed:", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(recheck):
		}
	}
}

func pin(ctx context.Context, n *mesh.Node, manifestURL string) error {
	m, err := n.LoadManifest(ctx, manifestURL)
	if err != nil {
		return err
	}
	before := n.Stats().Fetch
	if err := n.Pin(ctx, m); err != nil {
		return err
	}
	after := n.Stats()
	fmt.Printf("pinned %d assets: %d bytes from the origin, %d from peers this round; %d bytes stored, %d served\n",
		len(m.Assets), after.Fetch.OriginBytes-before.OriginBytes, after.Fetch.PeerBytes-before.PeerBytes,
		after.Store.Used, after.Fetch.ServedBytes)
	return nil
}
