package mesh

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/announce"
)

// Role says what a node is for; it picks the defaults of every Config field
// left zero (see defaults.go).
type Role string

const (
	// RoleApp is a desktop app or Electron backend: it dials out, uses
	// relays and hole punching, finds LAN peers with mDNS and serves others
	// modestly. The default.
	RoleApp Role = "app"
	// RoleSeed is a kiosk or server that stays up: it listens on every
	// browser-dialable transport, runs a circuit relay v2 service so that
	// browsers can reach each other, and serves generously.
	RoleSeed Role = "seed"
)

// Toggle turns a feature on or off; its zero value means the role's default.
type Toggle = announce.Toggle

// Toggle values.
const (
	Default = announce.Default
	On      = announce.On
	Off     = announce.Off
)

// Config configures a Node. Zero fields mean the role's default, stated
// beside each field; turning something off takes an explicit value. New
// copies the Config; Node.Config shows what is in effect.
type Config struct {
	// Name is the mesh's name: nodes only meet nodes of the same name (it
	// derives the gossipsub topic, the DHT protocol prefix and the mDNS
	// service). Required; see announce.ValidName.
	Name string

	// Role picks the defaults. Default RoleApp.
	Role Role

	// DataDir holds the node's identity key (so its peer ID survives
	// restarts) and its block store. Required unless InMemory.
	DataDir string

	// InMemory keeps the store in memory and makes a new identity on every
	// start: for tests and throw-away nodes. Default false; not with
	// DataDir.
	InMemory bool

	// Quota is the most bytes of content the store keeps. Default 1 GiB for
	// apps, 8 GiB for seeds; negative means no quota.
	Quota int64

	// ReleaseMapped is how often the store gives the pages of its
	// memory-mapped files back to the kernel (store.Config.ReleaseMapped),
	// and, when the process allocated or holds 8 MiB or more since the
	// last pass, returns the Go heap's free pages too (debug.FreeOSMemory:
	// a collection; an idle process is left alone), so that an app's
	// resident memory falls back after a fetch. Default
	// store.DefaultReleaseMapped (20 s) for apps; never for seeds, whose
	// served content is best kept resident; negative means never. A node
	// that does not release its mapped pages (a seed) still returns the Go
	// heap's garbage once it goes quiet after activity (checked every 5 s,
	// store.Config.ReleaseQuietHeap): a seed idle after pinning 30 MiB kept
	// 41-53 MiB of heap resident, 10 of it live, until a peer asked it for
	// something.
	ReleaseMapped time.Duration

	// Origin is the base URL the site's assets are served from over plain
	// HTTP: a manifest path p is fetched from Origin + "/" + p (Range
	// requests for single leaves). Empty means no origin: only peers.
	Origin string

	// Gateway is a trustless gateway's base URL (GATEWAY/ipfs/CID?format=raw)
	// used for content fetched by CID alone. Empty means none. A query (a
	// signed URL's token) is kept after /ipfs/CID.
	Gateway string

	// ListenAddrs are the multiaddrs the host listens on. Default for apps:
	// TCP and QUIC on every interface, ports chosen by the system (and
	// WebRTC-direct and WebTransport, see BrowserTransports); for seeds
	// also WebTransport, WebRTC-direct and WebSockets. Tests and the demo
	// pass LoopbackAddrs(role). New fails with a *ConfigError when an
	// address given here cannot be listened on (a port taken, a transport
	// go-libp2p lacks); of the defaults, one that fails (IPv6 on a host
	// without it) is logged and the others serve.
	ListenAddrs []string

	// Bootstrap are the mesh's seeds, as multiaddrs ending in /p2p/ID (a
	// peer may be listed at several addresses). The node dials them at
	// start and keeps them connected for its whole life: a connection
	// that lasted BootstrapBackoff.Max and dropped is redialled at once, a
	// failed dial (or a connection dropped sooner) again after
	// BootstrapBackoff; their connections are protected from the
	// connection manager. It asks each for what it and the peers it knows
	// hold (Ready waits for that), and an app behind NAT takes relay
	// reservations on them. Node.SetBootstrap changes the set at run time.
	// Default none.
	Bootstrap []string

	// BootstrapBackoff is the wait between failed dials of a bootstrap
	// peer. Default DefaultBootstrapBackoff: 250 ms doubling to 30 s, each
	// wait cut by up to half at random. Min is at least
	// MinBootstrapBackoff (10 ms).
	BootstrapBackoff Backoff

	// RelayReservations is how many seeds (bootstrap peers) an app holds
	// circuit relay reservations on while AutoNAT finds it not publicly
	// reachable, so that peers can reach it through them and hole punching
	// has a relay to start from. Apps only; default 2; negative turns
	// AutoRelay off.
	RelayReservations int

	// MDNS finds peers of the same mesh on the LAN. Default On for both
	// roles. It multicasts on every interface: tests turn it Off.
	MDNS Toggle

	// NATPortMap asks the LAN's router (UPnP, NAT-PMP) to forward a port.
	// Default On for apps, Off for seeds (which have public addresses).
	NATPortMap Toggle

	// RelayService runs a circuit relay v2 service so browsers can reach
	// each other through this node (WebRTC signalling). Default On for
	// seeds, Off for apps. A relay service runs only where the host counts
	// as publicly reachable: seeds are declared public
	// (libp2p.ForceReachabilityPublic).
	RelayService Toggle

	// Relay bounds the relay service (reservations in all, per IP and per
	// ASN, circuits per peer, bytes and lifetime of a circuit) and the
	// connections one IP address may hold, sized on seeds for the browsers
	// of an office behind one NAT. A zero field takes the role's default
	// (see RelayLimits); a negative one means no limit.
	Relay RelayLimits

	// BrowserTransports makes the host also listen on WebRTC-direct and
	// WebTransport (UDP, ports chosen by the system) at every IP address of
	// ListenAddrs that lacks them, so that a browser that can reach the
	// node (a page on the same LAN as a desktop app) dials it directly and
	// fetches over that connection instead of from the origin. Browser
	// pages of the mesh learn these addresses from the mesh's seeds (the
	// summary request, see package announce): a seed tells them to pages
	// of its own mesh only, and a page dials a private address only of a
	// peer that announced content in its mesh. Default On for apps; Off
	// for seeds, whose default ListenAddrs list both transports on fixed
	// ports. Off listens on ListenAddrs alone, and pages then fetch what
	// this node holds from the origin or a seed. The addresses' certificate
	// hashes derive from the identity key (go-libp2p): WebRTC-direct's
	// stays the same across restarts on the same DataDir, WebTransport's
	// changes every 14 days; the ports change at each start. Node.Config
	// lists the added addresses in ListenAddrs.
	BrowserTransports Toggle

	// DisableDHT turns the mesh's DHT off: content is found by gossip only.
	// Default false.
	DisableDHT bool

	// AnnounceFetches tells the mesh of content this node starts to fetch
	// from the origin with no peer known to hold it (a HAVE with
	// announce.FetchingTTL, and a DROP if the fetch is abandoned), so that
	// peers wanting it at the same time get each block from this node as
	// it arrives: a flash crowd that starts cold pays the origin for about
	// one copy instead of one per node. Default On for both roles.
	AnnounceFetches Toggle

	// AnnounceAddrs sends this node's addresses with its announcements
	// (announce.Config.AnnounceAddrs), so that peers that hear of it only
	// through gossip can dial it (within FetchPeerBudget). Default Off for
	// both roles: the default demo (a seed, 20 apps) loses offload with it
	// (median 0.926 against 0.942, four runs each). In the demo site's
	// 50-app cold crowd it finished sooner on one 2-core machine (43 to 51
	// s against 55 to 61 s, origin copies 4.7 to 5.4 against 4.9 to 7.8);
	// on a slower one, where the all-connected crowd kept both cores busy,
	// it took 115 to 142 s and 5.8 to 9.5 copies against about 70 s and 4.6
	// without (docs/fetch.md, "Fetches dial within a peer budget").
	AnnounceAddrs Toggle

	// PeerTimeout is how long peers get before the origin is asked as well.
	// Default 200 ms.
	PeerTimeout time.Duration

	// FetchStriping splits the leaves that nodes fetching the same content
	// at the same time take from the origin, each node a different share
	// (fetch.Config.Crowd, fetch.Config.NoStriping). Default On for both
	// roles; Off asks the origin for whatever peers are late with.
	FetchStriping Toggle

	// FetchWindowBytes bounds the leaves each fetch holds in memory ahead
	// of its reader (fetch.Config.WindowBytes). Default 8 MiB; negative
	// means no bound.
	FetchWindowBytes int64

	// FetchPeerBudget bounds the dials of fetches: a fetch dials its
	// providers and crowd members only while the node has fewer peers
	// connected, or the fetch fewer than two of them
	// (fetch.Config.PeerBudget). Default 8; negative means no bound.
	FetchPeerBudget int

	// ServeBytesPerSecond caps what this node serves to others. Default
	// 4 MiB/s for apps, 128 MiB/s (about a gigabit link) for seeds;
	// negative means no cap.
	ServeBytesPerSecond int64

	// ServeBurst is how many bytes this node, having served nothing for a
	// while, may send at once before ServeBytesPerSecond paces it (over any
	// span T: at most the cap times T plus ServeBurst). Default for apps
	// 4 MiB (a second of their default cap, at most the cap): an idle app
	// answers a peer in a round trip rather than at the cap's pace; for
	// seeds one block, 1 MiB (at their cap's pace a block every 8 ms, and
	// a crowd served in the order it asked finishes sooner than one served
	// all at once). At least one block.
	ServeBurst int64

	// ServeConcurrency caps the block requests of others served at once.
	// Default 8 for apps, 64 for seeds; negative means no cap.
	ServeConcurrency int

	// ServeEvenly orders the peers this node serves itself
	// (fetch.Config.ServeEvenly): a block a peer's reader waits on before
	// any peer's read-ahead, then the peer sent the fewest bytes lately.
	// Off, bitswap's own order serves first the peers with the most
	// requests pending: a seed at its cap serving 20 apps left an app near
	// the end of a file without a block for over a second, and its reader
	// took the leaves from the origin. Default On for seeds, Off for apps
	// (no gain shown in a crowd of apps; docs/fetch.md).
	ServeEvenly Toggle

	// MaxMemory is the resource manager's memory limit for libp2p
	// (connections, streams, buffers). Default 256 MiB for apps, 1 GiB for
	// seeds; New refuses a negative value.
	MaxMemory int64

	// MaxConns is the most connections the host keeps (the connection
	// manager trims above it). Default 128 for apps, 1024 for seeds; New
	// refuses a negative value.
	MaxConns int

	// Site versions and the origin (follow.go). Zero fields take the
	// defaults in defaults.go (siteDefaults); negative timeouts mean none.

	// OriginHeaderTimeout bounds the wait for the origin's response
	// headers, OriginIdleTimeout the wait for the next 16 KiB of a body (or
	// its end): an origin silent, or trickling a few bytes, for that long
	// counts as dead, and its error matches context.DeadlineExceeded.
	// Default 10 s each.
	OriginHeaderTimeout, OriginIdleTimeout time.Duration

	// ManifestTimeout bounds loading a manifest (LoadManifest, Follow),
	// from the request to the last byte. Default 30 s; negative means
	// none (the caller's context alone).
	ManifestTimeout time.Duration

	// FollowInterval is how often Follow checks the site's manifest.
	// Default 1 min for apps, 30 s for seeds; at least MinFollowInterval
	// (100 ms).
	FollowInterval time.Duration

	// HTTPClient fetches manifests and origin content. Nil means a client
	// of the node's own. The node closes its idle connections when the
	// machine's network changes (they may be bound to an address gone).
	HTTPClient *http.Client

	// Logger receives the node's logs (slog attributes pkg, cid, peer,
	// source, bytes, dur, err). Nil discards them.
	Logger *slog.Logger

	// PrometheusRegisterer, if set, gets the node's metrics: store usage
	// and quota (meshcdn_store_*), connected peers by role (meshcdn_peers),
	// fetches (meshcdn_fetch_*), announcements (meshcdn_announce_*) and
	// libp2p's own. Every one carries PrometheusLabels, and Close
	// unregisters all of them, libp2p's included, so nodes can come and go
	// and several can share one registry. go-libp2p's own series are
	// process-wide (package-level collectors): with two nodes in one
	// process, each node's copy of them counts both. Nil registers
	// nothing: never the global registry unless you pass it.
	PrometheusRegisterer prometheus.Registerer

	// PrometheusLabels are constant labels on every metric of the node;
	// each name is [a-zA-Z_][a-zA-Z0-9_]*, not beginning with "__".
	// Nodes sharing a registry need the same label names with different
	// values (go-libp2p panics on a registry holding its metrics under
	// other label names). Default {"node": "<peer ID>"}.
	PrometheusLabels prometheus.Labels

	// Libp2pOptions are appended to the host's options, after ours: tuning
	// that this Config does not name. A libp2p.ConnectionGater given here
	// is asked beside the node's own, which refuses the connections of
	// peers the fetcher refuses (fetch.Gater).
	Libp2pOptions []libp2p.Option
}

// ErrConfig reports a Config that cannot make a node. New returns it
// wrapped in a *ConfigError that says which field.
var ErrConfig = errors.New("mesh: bad config")

// ConfigError is the error New returns for a Config it cannot use. It
// matches ErrConfig with errors.Is.
type ConfigError struct {
	// Field names the field, with the index of the entry for a list
	// ("Bootstrap[1]").
	Field string
	// Value is the offending value as given, if any.
	Value string
	// Reason says what is wrong with it.
	Reason string
}

// Error returns "mesh: bad config: Field "Value": Reason".
func (e *ConfigError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%v: %s: %s", ErrConfig, e.Field, e.Reason)
	}
	return fmt.Sprintf("%v: %s %q: %s", ErrConfig, e.Field, e.Value, e.Reason)
}

// Is reports whether target is ErrConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// The least durations a Config accepts: what a slip of units gives
// (Backoff{Min: 250} meant as milliseconds, FollowInterval: 30 meant as
// seconds) otherwise ran as nanoseconds, a core spent redialling a dead
// seed, 14,000 manifest requests a second.
const (
	// MinBootstrapBackoff is the least BootstrapBackoff.Min.
	MinBootstrapBackoff = 10 * time.Millisecond
	// MinFollowInterval is the least FollowInterval and
	// FollowConfig.Interval.
	MinFollowInterval = 100 * time.Millisecond
)

func configErr(field, value, reason string) error {
	return &ConfigError{Field: field, Value: value, Reason: reason}
}

func (c *Config) validate() error {
	switch {
	case !announce.ValidName(c.Name):
		return configErr("Name", c.Name, "1-63 of a-z, 0-9 and '-'")
	case c.Role != RoleApp && c.Role != RoleSeed:
		return configErr("Role", string(c.Role), `not "app" or "seed"`)
	case c.DataDir == "" && !c.InMemory:
		return configErr("DataDir", "", "required unless InMemory")
	case c.DataDir != "" && c.InMemory:
		// Both: DataDir was ignored (no key kept, no lock; two nodes
		// "on" one directory both started).
		return configErr("InMemory", "true", "set with DataDir: a node keeps its state in one or the other")
	case c.PeerTimeout < 0:
		return configErr("PeerTimeout", c.PeerTimeout.String(), "negative")
	case c.BootstrapBackoff.Min <= 0 || c.BootstrapBackoff.Max < c.BootstrapBackoff.Min ||
		c.BootstrapBackoff.Jitter < 0 || c.BootstrapBackoff.Jitter > 1:
		return configErr("BootstrapBackoff", fmt.Sprintf("%+v", c.BootstrapBackoff), "want 0 < Min <= Max and 0 <= Jitter <= 1")
	case c.BootstrapBackoff.Min < MinBootstrapBackoff:
		return configErr("BootstrapBackoff", fmt.Sprintf("%+v", c.BootstrapBackoff), fmt.Sprintf("Min under MinBootstrapBackoff (%v)", MinBootstrapBackoff))
	case c.FollowInterval < MinFollowInterval:
		return configErr("FollowInterval", c.FollowInterval.String(), fmt.Sprintf("under MinFollowInterval (%v)", MinFollowInterval))
	case c.MaxMemory < 0:
		return configErr("MaxMemory", fmt.Sprint(c.MaxMemory), "negative")
	case c.MaxConns < 0:
		return configErr("MaxConns", fmt.Sprint(c.MaxConns), "negative")
	}
	if err := c.checkToggles(); err != nil {
		return err
	}
	for k := range c.PrometheusLabels {
		if !labelName(k) {
			// Registering it panicked in go-libp2p, inside New, leaving
			// the DataDir locked for the rest of the process.
			return configErr("PrometheusLabels", k, "a label name is a letter or '_', then letters, digits or '_', and does not begin with \"__\"")
		}
	}
	if err := checkBaseURL("Origin", c.Origin); err != nil {
		return err
	}
	if err := checkBaseURL("Gateway", c.Gateway); err != nil && !gatewayQuery(c.Gateway) {
		return err
	}
	for i, a := range c.ListenAddrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return configErr(fmt.Sprintf("ListenAddrs[%d]", i), a, err.Error())
		}
	}
	for i, a := range c.Bootstrap {
		if _, err := parsePeer(a); err != nil {
			return configErr(fmt.Sprintf("Bootstrap[%d]", i), a, err.Error())
		}
	}
	return nil
}

// checkToggles refuses a Toggle other than Default, On and Off: the node
// would take it for Off without a word.
func (c *Config) checkToggles() error {
	for _, f := range []struct {
		name string
		v    Toggle
	}{
		{"MDNS", c.MDNS}, {"NATPortMap", c.NATPortMap}, {"RelayService", c.RelayService},
		{"BrowserTransports", c.BrowserTransports}, {"AnnounceFetches", c.AnnounceFetches},
		{"AnnounceAddrs", c.AnnounceAddrs}, {"FetchStriping", c.FetchStriping},
	} {
		if err := checkToggle(f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}

// checkToggle refuses a Toggle other than Default, On and Off.
func checkToggle(field string, v Toggle) error {
	if v != Default && v != On && v != Off {
		return configErr(field, fmt.Sprint(int(v)), "not Default, On or Off")
	}
	return nil
}

// checkBaseURL accepts "" or an absolute http or https URL with a host.
func checkBaseURL(field, s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return configErr(field, s, "not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return configErr(field, s, "not an http or https URL")
	case u.Host == "":
		return configErr(field, s, "no host")
	case u.RawQuery != "" || u.Fragment != "":
		return configErr(field, s, "a base URL has no query or fragment")
	}
	return nil
}

// gatewayQuery reports whether s is an http(s) URL with a host whose only
// fault as a base URL is its query: a trustless gateway's signed URL, whose
// token the fetch package keeps after /ipfs/CID (fetch.Target.Gateway). A
// fragment is still refused.
func gatewayQuery(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Fragment == ""
}

// labelName reports whether k is a Prometheus label name every version of
// the client accepts: [a-zA-Z_][a-zA-Z0-9_]*, not beginning with "__"
// (reserved).
func labelName(k string) bool {
	if k == "" || strings.HasPrefix(k, "__") {
		return false
	}
	for i, r := range k {
		letter := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !letter && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}
