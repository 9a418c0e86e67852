package mesh

import (
	"time"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// Defaults of staying connected (both roles).
var (
	// DefaultBootstrapBackoff is Config.BootstrapBackoff's default: a
	// restarted seed is redialled within a second or two, a dead one every
	// 15-30 s.
	DefaultBootstrapBackoff = Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.5}
)

// DefaultRelayReservations is Config.RelayReservations's default.
const DefaultRelayReservations = 2

// Relay and per-address limits (Config.Relay). Apps keep go-libp2p's
// defaults; seeds serve the browsers of whole offices, each office behind
// one NAT address: 256 tabs of one address, 1024 reservations in all (the
// seed's MaxConns), 64 circuits per tab (a tab holding what a crowd wants
// is dialled by every other tab within seconds), and circuits of 128 KiB
// and 1 min, enough to signal WebRTC (about 5 KB) and never enough for
// content.
var (
	appRelayLimits = RelayLimits{
		Reservations: 128, ReservationsPerIP: 8, ReservationsPerASN: 32, CircuitsPerPeer: 16,
		CircuitBytes: 128 << 10, CircuitDuration: 2 * time.Minute, ConnsPerIP: 8,
	}
	seedRelayLimits = RelayLimits{
		Reservations: 1024, ReservationsPerIP: 256, ReservationsPerASN: 1024, CircuitsPerPeer: 64,
		CircuitBytes: 128 << 10, CircuitDuration: time.Minute, ConnsPerIP: 256,
	}
)

// roleDefaults holds every role default in one place. A Config field left
// zero takes the value here.
var roleDefaults = map[Role]Config{
	RoleApp: {
		Quota: 1 << 30,
		ListenAddrs: []string{
			"/ip4/0.0.0.0/tcp/0",
			"/ip4/0.0.0.0/udp/0/quic-v1",
			"/ip6/::/tcp/0",
			"/ip6/::/udp/0/quic-v1",
		},
		MDNS:                On,
		NATPortMap:          On,
		RelayService:        Off,
		AnnounceFetches:     On,
		AnnounceAddrs:       Off,
		PeerTimeout:         fetch.DefaultPeerTimeout,
		ServeBytesPerSecond: 4 << 20,
		// One second of the cap: an idle app sends a block in a round
		// trip, not in 250 ms (longer than PeerTimeout, so the origin
		// joined every fetch from an app).
		ServeBurst:       4 << 20,
		ServeConcurrency: 8,
		ServeEvenly:      Off,
		MaxMemory:        256 << 20,
		MaxConns:         128,
		ReleaseMapped:    store.DefaultReleaseMapped,
		Relay:            appRelayLimits,
	},
	RoleSeed: {
		Quota: 8 << 30,
		ListenAddrs: []string{
			"/ip4/0.0.0.0/tcp/4001",
			"/ip4/0.0.0.0/udp/4001/quic-v1",
			"/ip4/0.0.0.0/udp/4001/quic-v1/webtransport",
			"/ip4/0.0.0.0/udp/4002/webrtc-direct",
			"/ip4/0.0.0.0/tcp/4003/ws",
			"/ip6/::/tcp/4001",
			"/ip6/::/udp/4001/quic-v1",
			"/ip6/::/udp/4001/quic-v1/webtransport",
			"/ip6/::/udp/4002/webrtc-direct",
		},
		MDNS:                On,
		NATPortMap:          Off,
		RelayService:        On,
		AnnounceFetches:     On,
		AnnounceAddrs:       Off,
		PeerTimeout:         fetch.DefaultPeerTimeout,
		ServeBytesPerSecond: 128 << 20, // about a gigabit link: serving is a seed's job
		// One block: at 128 MiB/s a block every 8 ms, and a crowd is
		// served in the order it asked (a burst of a second's worth let
		// 50 apps each take a slow share at once, and they finished
		// later: examples/bench's crowd with a seed, 2 to 3 times the
		// completion time).
		ServeBurst:       1 << 20,
		ServeConcurrency: 64,
		ServeEvenly:      On,
		MaxMemory:        1 << 30,
		MaxConns:         1024,
		ReleaseMapped:    -1,
		Relay:            seedRelayLimits,
	},
}

// LoopbackAddrs returns listen addresses on 127.0.0.1 with ports chosen by
// the system, for tests, demos and nodes that only talk to this machine: TCP
// and QUIC for apps, and for seeds also WebTransport, WebRTC-direct and
// WebSockets, the transports browsers dial. (An app with
// Config.BrowserTransports On, its default, adds WebRTC-direct and
// WebTransport on 127.0.0.1 itself.)
func LoopbackAddrs(r Role) []string {
	addrs := []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	if r == RoleSeed {
		addrs = append(addrs,
			"/ip4/127.0.0.1/udp/0/quic-v1/webtransport",
			"/ip4/127.0.0.1/udp/0/webrtc-direct",
			"/ip4/127.0.0.1/tcp/0/ws",
		)
	}
	return addrs
}

// withDefaults returns c with every zero field set from its role's defaults.
func (c Config) withDefaults() Config {
	if c.Role == "" {
		c.Role = RoleApp
	}
	d, ok := roleDefaults[c.Role]
	if !ok {
		return c // validate reports the bad role
	}
	if c.Quota == 0 {
		c.Quota = d.Quota
	}
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = append([]string(nil), d.ListenAddrs...)
	}
	if c.MDNS == Default {
		c.MDNS = d.MDNS
	}
	if c.NATPortMap == Default {
		c.NATPortMap = d.NATPortMap
	}
	if c.RelayService == Default {
		c.RelayService = d.RelayService
	}
	if c.AnnounceFetches == Default {
		c.AnnounceFetches = d.AnnounceFetches
	}
	if c.AnnounceAddrs == Default {
		c.AnnounceAddrs = d.AnnounceAddrs
	}
	if c.PeerTimeout == 0 {
		c.PeerTimeout = d.PeerTimeout
	}
	if c.ServeBytesPerSecond == 0 {
		c.ServeBytesPerSecond = d.ServeBytesPerSecond
	}
	if c.ServeBurst == 0 {
		c.ServeBurst = min(d.ServeBurst, max(c.ServeBytesPerSecond, 1<<20))
	}
	if c.ServeConcurrency == 0 {
		c.ServeConcurrency = d.ServeConcurrency
	}
	if c.ServeEvenly == Default {
		c.ServeEvenly = d.ServeEvenly
	}
	if c.MaxMemory == 0 {
		c.MaxMemory = d.MaxMemory
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.ReleaseMapped == 0 {
		c.ReleaseMapped = d.ReleaseMapped
	}
	if c.BootstrapBackoff == (Backoff{}) {
		c.BootstrapBackoff = DefaultBootstrapBackoff
	}
	c.Relay = c.Relay.withDefaults(d.Relay)
	if c.RelayReservations == 0 {
		c.RelayReservations = DefaultRelayReservations
	}
	c = c.withBrowserTransports()
	return c.withSiteDefaults()
}

// siteDefaults are the role defaults of following a site and of the
// origin's timeouts (follow.go).
var siteDefaults = map[Role]Config{
	RoleApp: {
		OriginHeaderTimeout: fetch.DefaultOriginHeaderTimeout,
		OriginIdleTimeout:   fetch.DefaultOriginIdleTimeout,
		ManifestTimeout:     30 * time.Second,
		FollowInterval:      time.Minute,
	},
	RoleSeed: {
		OriginHeaderTimeout: fetch.DefaultOriginHeaderTimeout,
		OriginIdleTimeout:   fetch.DefaultOriginIdleTimeout,
		ManifestTimeout:     30 * time.Second,
		FollowInterval:      30 * time.Second,
	},
}

func (c Config) withSiteDefaults() Config {
	d := siteDefaults[c.Role]
	if c.OriginHeaderTimeout == 0 {
		c.OriginHeaderTimeout = d.OriginHeaderTimeout
	}
	if c.OriginIdleTimeout == 0 {
		c.OriginIdleTimeout = d.OriginIdleTimeout
	}
	if c.ManifestTimeout == 0 {
		c.ManifestTimeout = d.ManifestTimeout
	}
	if c.FollowInterval == 0 {
		c.FollowInterval = d.FollowInterval
	}
	return c
}

// browserTransportDefaults are Config.BrowserTransports's role defaults:
// apps listen where browsers on their LAN can dial them (browsers.go);
// seeds' default ListenAddrs have both transports on fixed ports already.
var browserTransportDefaults = map[Role]Toggle{
	RoleApp:  On,
	RoleSeed: Off,
}

func (c Config) withBrowserTransports() Config {
	if c.BrowserTransports == Default {
		c.BrowserTransports = browserTransportDefaults[c.Role]
	}
	if c.BrowserTransports == On {
		c.ListenAddrs = withBrowserAddrs(c.ListenAddrs)
	}
	return c
}
