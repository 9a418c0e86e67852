package mesh_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/mesh"
)

// listenAddrsOf returns the concrete addresses n listens on, without
// /p2p/ID: what a restart on the same addresses passes as ListenAddrs.
func listenAddrsOf(n *mesh.Node) []string {
	var out []string
	for _, a := range n.Host().Addrs() {
		out = append(out, a.String())
	}
	return out
}

// awaitConnectedness waits until n's connectedness to p is want.
func awaitConnectedness(ctx context.Context, t *testing.T, n *mesh.Node, p peer.ID, want bool) {
	t.Helper()
	sub, err := n.Host().EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for (n.Host().Network().Connectedness(p) == network.Connected) != want {
		select {
		case <-sub.Out():
		case <-ctx.Done():
			t.Fatalf("connected to %s: want %v, still not after the test's deadline", p, want)
		}
	}
}

// TestSeedRestartedOnSameAddressIsReconnected (issue 10, must-show 2): a seed
// that restarts on the same address and DataDir is reconnected by its apps
// within 10 s, and Ready holds again.
func TestSeedRestartedOnSameAddressIsReconnected(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	cfg := mesh.Config{Name: "restart", Role: mesh.RoleSeed, DataDir: dir,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, MDNS: mesh.Off, DisableDHT: true}
	seed, err := mesh.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { seed.Close() }()
	cfg.ListenAddrs = listenAddrsOf(seed) // the same port on restart
	id := seed.ID()
	apps := make([]*mesh.Node, 3)
	for i := range apps {
		apps[i] = newNode(t, mesh.Config{Name: "restart", Bootstrap: []string{seed.Addrs()[0].String()}, DisableDHT: true})
		if err := apps[i].Ready(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	for _, app := range apps {
		awaitConnectedness(ctx, t, app, id, false)
	}
	stopped := time.Now()
	seed, err = mesh.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if seed.ID() != id {
		t.Fatalf("the seed restarted as %s, want %s", seed.ID(), id)
	}
	within, cancelWithin := context.WithTimeout(ctx, 10*time.Second)
	defer cancelWithin()
	for i, app := range apps {
		awaitConnectedness(within, t, app, id, true)
		if err := app.Ready(within); err != nil {
			t.Fatalf("app %d: Ready after the seed's restart: %v", i, err)
		}
		if s := app.Stats(); s.Seeds != 1 {
			t.Errorf("app %d: Stats().Seeds = %d, want 1", i, s.Seeds)
		}
	}
	t.Logf("all %d apps reconnected %v after the seed stopped", len(apps), time.Since(stopped).Round(time.Millisecond))
}

// TestSetBootstrap: the set changes at run time; a bad entry changes
// nothing and says which one.
func TestSetBootstrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, DisableDHT: true})
	app := newNode(t, mesh.Config{DisableDHT: true})
	if err := app.Ready(ctx); err != nil {
		t.Fatalf("Ready with no bootstrap peers = %v, want nil at once", err)
	}
	addr := seed.Addrs()[0].String()
	err := app.SetBootstrap([]string{addr, "/ip4/127.0.0.1/tcp/1"})
	var ce *mesh.ConfigError
	if !errors.As(err, &ce) || ce.Field != "Bootstrap[1]" || !errors.Is(err, mesh.ErrConfig) {
		t.Fatalf("SetBootstrap with an address without /p2p = %v, want a ConfigError for Bootstrap[1]", err)
	}
	if got := app.Config().Bootstrap; len(got) != 0 {
		t.Fatalf("a failed SetBootstrap changed Config().Bootstrap to %v", got)
	}
	self := app.Addrs()[0].String() // a seed list may name this node itself
	if err := app.SetBootstrap([]string{self}); err != nil {
		t.Fatal(err)
	}
	if err := app.Ready(ctx); err != nil {
		t.Fatalf("Ready with only this node itself as bootstrap peer = %v, want nil (nothing to wait for)", err)
	}
	if err := app.SetBootstrap([]string{addr, self}); err != nil {
		t.Fatal(err)
	}
	if err := app.Ready(ctx); err != nil {
		t.Fatalf("Ready with the seed and this node itself as bootstrap peers = %v", err)
	}
	if got := app.Config().Bootstrap; len(got) != 2 || got[0] != addr {
		t.Errorf("Config().Bootstrap = %v, want [%s %s]", got, addr, self)
	}
	if s := app.Stats(); s.Seeds != 1 {
		t.Errorf("Stats().Seeds = %d, want 1", s.Seeds)
	}
	if !app.Host().ConnManager().IsProtected(seed.ID(), mesh.BootstrapTag) {
		t.Error("the bootstrap peer's connection is not protected")
	}
	if err := app.SetBootstrap(nil); err != nil {
		t.Fatal(err)
	}
	if app.Host().ConnManager().IsProtected(seed.ID(), mesh.BootstrapTag) {
		t.Error("a peer removed from the bootstrap set is still protected")
	}
	// Not redialled any more: a disconnect stays a disconnect.
	app.Host().Network().ClosePeer(seed.ID())
	if s := app.Stats(); s.Seeds != 0 {
		t.Errorf("Stats().Seeds = %d with an empty bootstrap set, want 0", s.Seeds)
	}
}

// TestReadyFailsWhenNoSeedAnswers: a bootstrap peer that refuses
// connections makes Ready fail with ErrNoBootstrapPeer after one dial,
// instead of holding the app up.
func TestReadyFailsWhenNoSeedAnswers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gone := newNode(t, mesh.Config{Role: mesh.RoleSeed, DisableDHT: true})
	addr := gone.Addrs()[0].String()
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	app := newNode(t, mesh.Config{Bootstrap: []string{addr}, DisableDHT: true})
	if err := app.Ready(ctx); !errors.Is(err, mesh.ErrNoBootstrapPeer) {
		t.Fatalf("Ready with the only seed gone = %v, want ErrNoBootstrapPeer", err)
	}
}

// TestNewRejectsBadConfig: each bad field is named.
func TestNewRejectsBadConfig(t *testing.T) {
	good := "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
	tests := []struct {
		name  string
		cfg   mesh.Config
		field string
	}{
		{"origin without scheme", mesh.Config{Origin: "cdn.example.com"}, "Origin"},
		{"origin of another scheme", mesh.Config{Origin: "ftp://cdn.example.com"}, "Origin"},
		{"origin without host", mesh.Config{Origin: "https:///site"}, "Origin"},
		{"origin with a query", mesh.Config{Origin: "https://cdn.example.com/?v=1"}, "Origin"},
		{"gateway not http", mesh.Config{Gateway: "ipfs://x"}, "Gateway"},
		{"bootstrap not a multiaddr", mesh.Config{Bootstrap: []string{good, "seed.example.com:4001"}}, "Bootstrap[1]"},
		{"bootstrap without peer ID", mesh.Config{Bootstrap: []string{"/ip4/127.0.0.1/tcp/4001"}}, "Bootstrap[0]"},
		{"listen address not a multiaddr", mesh.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/300.1.1.1/tcp/1"}}, "ListenAddrs[1]"},
		{"backoff max below min", mesh.Config{BootstrapBackoff: mesh.Backoff{Min: time.Second, Max: time.Millisecond}}, "BootstrapBackoff"},
		{"bad name", mesh.Config{Name: "Bad Name"}, "Name"},
		{"no data dir", mesh.Config{Name: "ok", InMemory: false}, "DataDir"},
		{"data dir and in memory", mesh.Config{DataDir: "state"}, "InMemory"}, // InMemory set below
		{"toggle neither on nor off", mesh.Config{RelayService: 2}, "RelayService"},
		{"toggle below off", mesh.Config{BrowserTransports: -3}, "BrowserTransports"},
		{"negative max conns", mesh.Config{MaxConns: -1}, "MaxConns"},
		{"negative max memory", mesh.Config{MaxMemory: -1}, "MaxMemory"},
		// Units slipped: nanoseconds spun a core redialling, and sent
		// thousands of manifest requests a second.
		{"backoff in nanoseconds", mesh.Config{BootstrapBackoff: mesh.Backoff{Min: 250, Max: 30000}}, "BootstrapBackoff"},
		{"follow interval in nanoseconds", mesh.Config{FollowInterval: 30}, "FollowInterval"},
		// go-libp2p panicked registering it, inside New, leaving the
		// DataDir locked.
		{"empty label name", mesh.Config{PrometheusLabels: prometheus.Labels{"": "x"}}, "PrometheusLabels"},
		{"label name with a dash", mesh.Config{PrometheusLabels: prometheus.Labels{"my-node": "x"}}, "PrometheusLabels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.Name == "" {
				cfg.Name = "cfg"
			}
			if tt.field != "DataDir" {
				cfg.InMemory = true
			}
			cfg.MDNS, cfg.NATPortMap = mesh.Off, mesh.Off
			n, err := mesh.New(context.Background(), cfg)
			if err == nil {
				n.Close()
				t.Fatalf("New accepted the config")
			}
			var ce *mesh.ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, mesh.ErrConfig) {
				t.Fatalf("New = %v, want a *ConfigError", err)
			}
			if ce.Field != tt.field {
				t.Errorf("ConfigError.Field = %q, want %q (%v)", ce.Field, tt.field, err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
		})
	}
}

// TestDataDirInUse: a second node on a DataDir in use fails with
// ErrDataDirInUse; once the first closes, it starts.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	cfg := mesh.Config{Name: "lock", DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, MDNS: mesh.Off, NATPortMap: mesh.Off, DisableDHT: true}
	a, err := mesh.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := mesh.New(context.Background(), cfg)
	if !errors.Is(err, mesh.ErrDataDirInUse) {
		if b != nil {
			b.Close()
		}
		t.Fatalf("second New on the same DataDir = %v, want ErrDataDirInUse", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := mesh.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New after the first node closed = %v", err)
	}
	c.Close()
}

// TestSeedRestartKeepsMultiaddrs (issue 10, must-show 2): a seed restarted
// on the same DataDir and the same fixed listen addresses has the same
// multiaddrs, certificate hashes of WebTransport and WebRTC-direct included
// (go-libp2p derives both certificates from the identity key), so stored
// bootstrap addresses and a browser's seed list keep working.
func TestSeedRestartKeepsMultiaddrs(t *testing.T) {
	dir := t.TempDir()
	cfg := mesh.Config{Name: "fixed", Role: mesh.RoleSeed, DataDir: dir, ListenAddrs: mesh.LoopbackAddrs(mesh.RoleSeed), MDNS: mesh.Off, DisableDHT: true}
	seed, err := mesh.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var fixed []string // the ports the system chose, now fixed
	for _, a := range seed.Host().Network().ListenAddresses() {
		s, _, _ := strings.Cut(a.String(), "/certhash/") // certhashes are not listened on
		if s != "/p2p-circuit" {
			fixed = append(fixed, s)
		}
	}
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.ListenAddrs = fixed
	start := func() []string {
		t.Helper()
		n, err := mesh.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		var out []string
		for _, a := range n.Addrs() {
			out = append(out, a.String())
		}
		return out
	}
	first := start()
	second := start()
	certhashes := 0
	for _, a := range first {
		certhashes += strings.Count(a, "/certhash/")
	}
	if certhashes < 2 {
		t.Fatalf("the seed's addresses carry %d certificate hashes, want WebTransport's and WebRTC-direct's: %v", certhashes, first)
	}
	if strings.Join(first, "\n") != strings.Join(second, "\n") {
		t.Errorf("multiaddrs changed across a restart:\nbefore %v\nafter  %v", first, second)
	}
}
