// Package mesh builds a meshcdn node in one call: a libp2p host with
// browser-dialable transports, the mesh's own Kademlia DHT, gossipsub
// announcements (package announce), bitswap on a quota-bound store (package
// store) and a fetcher that races peers against the HTTP origin (package
// fetch), wired with defaults for a role:
//
//   - RoleApp, a desktop app or Electron backend: dials out, uses relays and
//     hole punching, finds LAN peers with mDNS, serves others modestly
//     (4 MiB/s, 8 requests at once), keeps 1 GiB.
//   - RoleSeed, a kiosk or server that stays up: listens on TCP, QUIC,
//     WebTransport, WebRTC-direct and WebSockets, runs a circuit relay v2
//     service so that browsers can reach each other, pins what it is told
//     to, serves generously (128 MiB/s, about a gigabit link; 64 requests
//     at once), keeps 8 GiB.
//
// Both roles announce a cold fetch while it is under way
// (Config.AnnounceFetches), so that nodes wanting the same content at the
// same time take its blocks from the first instead of each from the origin.
// Every default sits in defaults.go; Node.Config shows what is in effect.
//
//	n, err := mesh.New(ctx, mesh.Config{Name: "acme-site", DataDir: dir, Origin: "https://cdn.example.com"})
//	m, err := n.LoadManifest(ctx, "manifest.json")
//	r, _, err := n.OpenAsset(ctx, m, "video/intro.mp4") // an io.ReadSeekCloser
//
// # What browsers can and cannot reach
//
// Browsers dial a native node over WebTransport, WebRTC-direct or secure
// WebSockets only when the node has a reachable address: seeds on public
// addresses. go-libp2p has no private-to-private WebRTC (go-libp2p#2009), so
// a Go node behind NAT (a typical desktop app) is not reachable by browsers;
// it still serves other native peers (hole punching, relays) and fetches
// from everyone. Browsers reach each other over WebRTC signalled through a
// seed's circuit relay; bulk data never goes through the relay (its default
// limits of 128 KiB and 2 minutes per circuit forbid it).
//
// # Connection limits
//
// go-libp2p's resource manager and connection manager are configured from
// one figure, Config.MaxConns (limits.go): the connection manager keeps
// between 3/4 of it and all of it (new connections safe for 30 s), the
// resource manager admits a quarter more than MaxConns inbound, so that
// trimming (idle peers first) always comes before refusing anyone; before,
// a seed admitted 128 inbound connections against a MaxConns of 1024, and
// 128 idle peers locked everyone out. Bitswap streams are capped at 16
// inbound per peer. The provider table ranks peers by what the node knows
// of them (delivered verified bytes, bootstrap, connected) over unknown
// keys: see announce.TableConfig.Evidence.
package mesh
