// Package mesh builds a meshcdn node in one call: a libp2p host with
// browser-dialable transports, the mesh's own Kademlia DHT, gossipsub
// announcements (package announce), bitswap on a quota-bound store (package
// store) and a fetcher that races peers against the HTTP origin (package
// fetch), wired with defaults for a role:
//
//   - RoleApp, a desktop app or Electron backend: dials out, uses relays and
//     hole punching, finds LAN peers with mDNS, listens for browsers on its
//     LAN (WebRTC-direct and WebTransport), serves others modestly
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
// # Seeds, readiness, operating
//
// Config.Bootstrap names the mesh's seeds. A node keeps them connected for
// its whole life (a dropped connection that had lasted 30 s is redialled at
// once, a failed dial again after Config.BootstrapBackoff: 250 ms doubling
// to 30 s, jittered),
// protects their connections from the connection manager, and, as an app
// behind NAT, holds circuit relay reservations on them. Node.SetBootstrap
// changes the set at run time. When the machine's network changes (a
// laptop on another Wi-Fi, a cable, offline and back: the addresses of
// the interfaces that are up, looked at every 2 s), the node closes the
// connections from addresses it no longer has and its HTTP client's idle
// ones, and redials its seeds at once. A seed keeps its multiaddrs across
// restarts when it keeps its DataDir (identity) and listens on fixed ports
// (examples/seed -listen).
//
// On every new connection a node asks the peer for the roots it holds
// (announce's summary request), and asks its seeds also for who else holds
// what. Node.Ready waits for the seeds' answers, so the app's first fetch
// after it uses the mesh; a fetch made earlier races a connected seed whose
// answer is pending before going to the origin.
//
// New names the field of a bad Config (*ConfigError) and refuses a DataDir
// that another node holds (ErrDataDirInUse). With Config.PrometheusRegisterer
// every metric of the node carries Config.PrometheusLabels (node="<peer
// ID>" by default) and Close unregisters them all.
//
// # What browsers can and cannot reach
//
// Browsers dial a native node over WebTransport, WebRTC-direct or secure
// WebSockets only when they can reach one of its addresses: seeds on public
// addresses, and desktop apps from a page on the same LAN. An app listens
// on WebRTC-direct and WebTransport at its own addresses by default
// (Config.BrowserTransports; Off turns it off); a page learns those
// addresses from its seed (announce's summary request lists the holders of
// its own mesh with their addresses) and dials an app that holds what it
// wants directly, at a private or loopback address the app gave, never one
// it was not told of (examples/browser/src/lan.js). go-libp2p has no
// private-to-private WebRTC (go-libp2p#2009), so a Go node behind NAT is
// not reachable by browsers outside its LAN; it still serves other native
// peers (hole punching, relays) and fetches from everyone. Browsers reach
// each other over WebRTC signalled through a seed's circuit relay; bulk data
// never goes through the relay (its limits of 128 KiB and 1 minute per
// circuit forbid it). A seed's relay and per-address limits (Config.Relay,
// RelayLimits) are sized for the browsers of an office behind one NAT
// address: 256 reservations and connections per IP, 1024 reservations in
// all, 64 circuits per peer; go-libp2p's defaults (8 per IP) refused the
// ninth tab.
//
// # Site versions
//
// A site is a sequence of manifests at one URL. Node.Follow checks it every
// Config.FollowInterval (1 min for apps, 30 s for seeds) with
// If-None-Match, swaps each new version, once checked in full, into the
// gateways attached to it, and tells the app (Follower.Subscribe or
// FollowConfig.OnEvent). A seed also pins the version in effect and unpins
// what left the site first, so a store quota that fits one version and a
// bit takes every redeploy. Every origin request has timeouts
// (Config.OriginHeaderTimeout and OriginIdleTimeout, 10 s; a manifest
// Config.ManifestTimeout, 30 s): a hung origin fails with an error
// matching context.DeadlineExceeded, other origin failures (a 404 or 500,
// a refused connection, a file that changed: fetch.ErrChanged) with errors
// that do not.
//
// # Connection limits
//
// go-libp2p's resource manager and connection manager are configured from
// one figure, Config.MaxConns (limits.go): the connection manager keeps
// between 3/4 of it and all of it (new connections safe for 30 s), the
// resource manager admits a quarter more than MaxConns inbound, so that
// trimming (idle peers first) always comes before refusing anyone; before,
// a seed admitted 128 inbound connections against a MaxConns of 1024, and
// 128 idle peers locked everyone out. Bitswap streams are capped at 64
// inbound per peer. The provider table ranks peers by what the node knows
// of them (delivered verified bytes, bootstrap, connected) over unknown
// keys: see announce.TableConfig.Evidence.
package mesh
