package mesh_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	libp2pwebrtc "github.com/libp2p/go-libp2p/p2p/transport/webrtc"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// browserAddrs returns n's WebRTC-direct and WebTransport addresses.
func browserAddrs(n *mesh.Node) (webrtc, webtransport []ma.Multiaddr) {
	for _, a := range n.Host().Addrs() {
		if _, err := a.ValueForProtocol(ma.P_WEBRTC_DIRECT); err == nil {
			webrtc = append(webrtc, a)
		}
		if _, err := a.ValueForProtocol(ma.P_WEBTRANSPORT); err == nil {
			webtransport = append(webtransport, a)
		}
	}
	return webrtc, webtransport
}

// certhashes returns the /certhash values of addrs, in order.
func certhashes(addrs []ma.Multiaddr) []string {
	var out []string
	for _, a := range addrs {
		for _, c := range a {
			if c.Protocol().Code == ma.P_CERTHASH {
				out = append(out, c.Value())
			}
		}
	}
	return out
}

// TestAppListensForBrowsers (issue 14): an app listens on WebRTC-direct and
// WebTransport by default, on its listen IPs, and a restart on the same
// DataDir keeps the certificate hashes (ports change: browsers learn the
// addresses afresh).
func TestAppListensForBrowsers(t *testing.T) {
	dir := t.TempDir()
	cfg := mesh.Config{DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}
	app := newNode(t, cfg)
	if got := app.Config().BrowserTransports; got != mesh.On {
		t.Errorf("app: BrowserTransports = %v, want On", got)
	}
	want := []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/webrtc-direct", "/ip4/127.0.0.1/udp/0/quic-v1/webtransport"}
	if got := app.Config().ListenAddrs; !slices.Equal(got, want) {
		t.Errorf("app: ListenAddrs = %q, want %q", got, want)
	}
	rtc, wt := browserAddrs(app)
	if len(rtc) != 1 || len(wt) != 1 {
		t.Fatalf("app listens on WebRTC-direct %v and WebTransport %v, want one of each", rtc, wt)
	}
	for _, a := range append(rtc, wt...) {
		if ip, _ := a.ValueForProtocol(ma.P_IP4); ip != "127.0.0.1" {
			t.Errorf("browser address %s is not on the listen IP 127.0.0.1", a)
		}
	}
	rtcHash, wtHash := certhashes(rtc), certhashes(wt)
	if len(rtcHash) != 1 || len(wtHash) != 2 {
		t.Fatalf("certhashes: WebRTC-direct %v, WebTransport %v; want 1 and 2", rtcHash, wtHash)
	}
	id := app.ID()
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	again := newNode(t, cfg)
	if again.ID() != id {
		t.Fatalf("restarted as %s, want %s", again.ID(), id)
	}
	rtc2, wt2 := browserAddrs(again)
	if got := certhashes(rtc2); !slices.Equal(got, rtcHash) {
		t.Errorf("WebRTC-direct certhash after a restart: %v, before %v", got, rtcHash)
	}
	// WebTransport's pair rotates every 14 days (go-libp2p): a restart
	// within the same period keeps it.
	if got := certhashes(wt2); !slices.Equal(got, wtHash) {
		t.Errorf("WebTransport certhashes after a restart: %v, before %v", got, wtHash)
	}
}

// TestAppBrowserTransportDials: a client with only the WebRTC-direct
// transport (as a browser has) reaches the app at its advertised address.
func TestAppBrowserTransportDials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app := newNode(t, mesh.Config{})
	rtc, _ := browserAddrs(app)
	if len(rtc) == 0 {
		t.Fatalf("app has no WebRTC-direct address: %v", app.Host().Addrs())
	}
	client, err := libp2p.New(libp2p.NoTransports, libp2p.Transport(libp2pwebrtc.New), libp2p.NoListenAddrs, libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Connect(ctx, peer.AddrInfo{ID: app.ID(), Addrs: rtc}); err != nil {
		t.Fatalf("dial %v: %v", rtc, err)
	}
	conns := client.Network().ConnsToPeer(app.ID())
	if len(conns) != 1 || !strings.Contains(conns[0].RemoteMultiaddr().String(), "/webrtc-direct") {
		t.Fatalf("client's connections to the app: %v, want one over WebRTC-direct", conns)
	}
	res := <-ping.Ping(ctx, client, app.ID())
	if res.Error != nil {
		t.Fatalf("ping over WebRTC-direct: %v", res.Error)
	}
}

// TestBrowserTransportsOff: Off listens on ListenAddrs alone; seeds default
// to Off and keep their own WebRTC-direct and WebTransport listeners.
func TestBrowserTransportsOff(t *testing.T) {
	app := newNode(t, mesh.Config{BrowserTransports: mesh.Off})
	if rtc, wt := browserAddrs(app); len(rtc)+len(wt) != 0 {
		t.Errorf("app with BrowserTransports Off listens on %v %v", rtc, wt)
	}
	if got, want := app.Config().ListenAddrs, mesh.LoopbackAddrs(mesh.RoleApp); !slices.Equal(got, want) {
		t.Errorf("app with BrowserTransports Off: ListenAddrs %q, want %q", got, want)
	}
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed})
	if got := seed.Config().BrowserTransports; got != mesh.Off {
		t.Errorf("seed: BrowserTransports = %v, want Off", got)
	}
	if got, want := seed.Config().ListenAddrs, mesh.LoopbackAddrs(mesh.RoleSeed); !slices.Equal(got, want) {
		t.Errorf("seed: ListenAddrs %q, want %q", got, want)
	}
	if rtc, wt := browserAddrs(seed); len(rtc) != 1 || len(wt) != 1 {
		t.Errorf("seed listens on WebRTC-direct %v and WebTransport %v, want one of each", rtc, wt)
	}
}

// TestSeedListsReachableHolderAddrsFirst: a seed's summary answer carries
// at most eight addresses of a holder (announce.MaxHolderAddrs). A desktop
// app has 16 or more (four transports on loopback and each interface);
// those others can reach come first, so an asker on the holder's LAN gets
// its WebRTC-direct address. Before, the eight came in the peerstore's map
// order, and the LAN ones were often left out.
func TestSeedListsReachableHolderAddrsFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newSite(t, map[string]int64{"a.bin": 3000})
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed})
	holder := newNode(t, mesh.Config{Origin: s.URL()})
	if err := holder.Pin(ctx, s.Manifest()); err != nil {
		t.Fatal(err)
	}
	if err := holder.Connect(ctx, seed.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	if err := meshtest.WaitProvider(ctx, seed, s.Manifest().Assets[0].Cid); err != nil {
		t.Fatal(err)
	}
	// The holder's loopback addresses (TCP, QUIC, WebTransport,
	// WebRTC-direct) are in the seed's peerstore from identify; add what
	// a LAN interface with IPv4 and IPv6 would give.
	rtc, wt := browserAddrs(holder)
	rtcHash, wtHash := certhashes(rtc), certhashes(wt)
	var lan []ma.Multiaddr
	for _, ip := range []string{"/ip4/10.9.8.7", "/ip6/fd00::7"} {
		for _, a := range []string{"/tcp/4001", "/udp/4001/quic-v1", "/udp/4002/webrtc-direct/certhash/" + rtcHash[0],
			"/udp/4003/quic-v1/webtransport/certhash/" + wtHash[0] + "/certhash/" + wtHash[1]} {
			lan = append(lan, ma.StringCast(ip+a))
		}
	}
	seed.Host().Peerstore().AddAddrs(holder.ID(), lan, time.Hour)
	if n := len(seed.Host().Peerstore().Addrs(holder.ID())); n < 12 {
		t.Fatalf("the seed knows %d addresses of the holder, want at least 12 for this test", n)
	}
	app := newNode(t, mesh.Config{Bootstrap: []string{seed.Addrs()[0].String()}})
	if err := app.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range app.Host().Peerstore().Addrs(holder.ID()) {
		got = append(got, a.String())
	}
	var want []string
	for _, a := range lan {
		want = append(want, a.String())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the app learned the holder's addresses %q from the seed, want the eight LAN ones %q", got, want)
	}
}
