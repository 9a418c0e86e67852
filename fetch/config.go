package fetch

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the Config fields whose zero value means "the default".
const (
	DefaultPeerTimeout                      = 200 * time.Millisecond
	DefaultStallTimeout                     = 5 * time.Second
	DefaultProviderWait                     = 10 * time.Millisecond
	DefaultReadAhead                        = 32
	DefaultWindowBytes                int64 = 8 << 20
	DefaultOriginConcurrency                = 4
	DefaultPeerBudget                       = 8
	DefaultPenalty                          = 10 * time.Minute
	DefaultServeBytesPerSecond        int64 = 16 << 20
	DefaultServeConcurrency                 = 16
	DefaultMaxOutstandingBytesPerPeer       = 2 << 20
	DefaultOriginHeaderTimeout              = 10 * time.Second
	DefaultOriginIdleTimeout                = 10 * time.Second
)

// Store is what a Fetcher needs from the block store: a boxo blockstore that
// fetched blocks go to and that bitswap serves from, and a way to name
// fetched content as held once all of it is stored (*store.Store implements
// it; its AddRoot emits the event the announcer turns into an announcement).
type Store interface {
	blockstore.Blockstore
	AddRoot(ctx context.Context, root cid.Cid, pin bool) error
}

// Advertiser tells the mesh of content this node has started to fetch from
// the origin with no peer known to hold it (Fetching), and of such a fetch
// that ended without the content stored whole (Abandoned). The announce
// package's *Announcer implements it. Calls should return promptly.
type Advertiser interface {
	Fetching(ctx context.Context, root cid.Cid) error
	Abandoned(ctx context.Context, root cid.Cid) error
}

// Crowd tells which other peers are fetching a root at the same time as
// this node: those that announced it (Advertiser.Fetching) and have not yet
// announced it held or abandoned. A fetch splits the leaves it takes from
// the origin among them (striping) and takes the rest from them. The
// announce package's *Table implements it. Calls must be cheap and safe
// for concurrent use.
type Crowd interface {
	Fetchers(root cid.Cid) []peer.ID
}

// Holders is what a Crowd may tell besides: the peers known to hold a root
// whole (they announced it held, not that they are fetching it), at most
// limit of them (limit <= 0: all). A stripe that knows one, and whose peers
// deliver, leaves the leaves ahead of its reader to the mesh, its own share
// included: they come through the members between this node and the
// holder. The announce package's *Table implements it. Calls must be
// cheap and safe for concurrent use.
type Holders interface {
	Holders(root cid.Cid, limit int) []peer.ID
}

// FetchStarts is what a Crowd may tell besides: when this node first heard
// that each peer it lists as fetching root began to (a peer missing from
// the map is not known to). A stripe gives the member that began first,
// alone, the leaves it can have taken from the origin before the next node
// began (its head start: headStart, policy.go), so that those who join it
// do not take them from the origin again. A fetch asks once per scheduling
// pass. The announce package's *Table implements it. Calls must be cheap
// and safe for concurrent use.
type FetchStarts interface {
	FetchStarts(root cid.Cid) map[peer.ID]time.Time
}

// Config configures a Fetcher. Zero fields mean the default stated beside
// them. New copies the Config; later changes to it do nothing.
type Config struct {
	// Host is the libp2p host bitswap runs on. Required. The Fetcher does
	// not close it.
	Host host.Host

	// Store holds fetched blocks (within its own quota) and is what this
	// peer serves to others. Required. The Fetcher does not close it.
	Store Store

	// Providers finds peers that hold a root CID (the announce package's
	// provider table). Nil means only connected peers are asked. The
	// Fetcher does not close it.
	Providers routing.ContentDiscovery

	// Advertiser, if set, is told when a fetch starts cold (no provider
	// known, so from the origin) and when such a fetch ends without the
	// content stored whole. Peers that want the same content meanwhile find
	// this node and get each block from it as it arrives, so a flash crowd
	// that starts together pays the origin for about one copy. Nil: nothing
	// is told, and each node of such a crowd fetches from the origin.
	Advertiser Advertiser

	// Crowd, if set, names the peers fetching the same content at the
	// same time, for striping: each node of the crowd takes a different
	// share of the leaves from the origin (policy.go, the package doc says
	// how the share is computed) and the rest from the others. Nil: no
	// striping. The Fetcher does not close it.
	Crowd Crowd

	// NoStriping turns striping off although Crowd is set: every fetch
	// asks the origin for any leaf peers are late with. Default false
	// (striping on).
	NoStriping bool

	// HTTPClient fetches from origins. Nil means a client of the Fetcher's
	// own, with keep-alive connections, closed by Close.
	HTTPClient *http.Client

	// PeerTimeout is how long peers get to deliver the first block of
	// content a provider is known for, and the longest a reader waits on
	// one block from peers, before the origin is asked as well. Default
	// DefaultPeerTimeout (200 ms).
	PeerTimeout time.Duration

	// StallTimeout is how long a fetch goes on when no source has delivered
	// anything and the origin has failed (or there is none): then the fetch
	// fails with ErrUnavailable. Default DefaultStallTimeout (5 s).
	StallTimeout time.Duration

	// ProviderWait bounds how long Open waits for Providers to say whether
	// anyone holds the content before going to the origin at once. A
	// provider table answers in microseconds; a slower discovery keeps
	// adding peers to the race after Open returns. Default
	// DefaultProviderWait (10 ms).
	ProviderWait time.Duration

	// ReadAhead is how many 1 MiB leaves past the reader's position are
	// fetched at once (WindowBytes of them held in memory). Bitswap's client sends wants at
	// most every 20 ms, so a peer fetch moves at most ReadAhead MiB per
	// 20 ms or so: 32 allows about 1.5 GiB/s. Default DefaultReadAhead (32).
	ReadAhead int

	// WindowBytes bounds the leaves a Reader holds in memory ahead of its
	// position: leaves fetched further ahead (within ReadAhead) go to the
	// store and are read back from it when the reader nears them, counted
	// once. A leaf the store cannot keep (quota) stays in memory. Default
	// DefaultWindowBytes (8 MiB, at least one leaf); negative means no
	// bound (every leaf within ReadAhead stays in memory).
	WindowBytes int64

	// ClosedError, if set, is matched beside ErrClosed by the errors of a
	// Reader that the Fetcher's Close ended (a mesh node passes its own
	// ErrClosed, so that a Read after the node closed matches it).
	ClosedError error

	// OriginHeaderTimeout bounds the wait for an origin's response headers,
	// and OriginIdleTimeout the wait for the next 16 KiB of its body (or
	// its end): an origin that accepts and says nothing, or trickles a few
	// bytes, for that long counts as dead.
	// The request fails with an error that matches
	// context.DeadlineExceeded, and so does the fetch if no peer delivers.
	// Default DefaultOriginHeaderTimeout and DefaultOriginIdleTimeout
	// (10 s each); negative means no timeout.
	OriginHeaderTimeout, OriginIdleTimeout time.Duration

	// OriginConcurrency is how many origin requests one fetch has in flight.
	// Default DefaultOriginConcurrency (4).
	OriginConcurrency int

	// PeerBudget bounds the dials of fetches: a fetch dials one of its
	// providers or crowd members only while the host has fewer than
	// PeerBudget peers connected or being dialled, or while the fetch has
	// fewer than two of them connected; the others wait as spares, dialled
	// (one picked at random) when that changes. A fetch waiting on peers
	// that looks its providers up again (refresh) dials the new ones
	// regardless. Default DefaultPeerBudget (8); negative means no bound.
	PeerBudget int

	// Gater, if set, keeps the peers this Fetcher refuses for breaking the
	// bitswap protocol (a message over the limits or malformed, silent
	// streams). Give the same Gater to the Host as its connection gater
	// (libp2p.ConnectionGater, when the Host is built) so that a refused
	// peer cannot connect again while it is refused; the Fetcher only reads
	// and adds to it. Nil: the Fetcher keeps its own, and a refused peer,
	// whose connections are closed, can dial again at once (its bitswap
	// streams are still reset unread). mesh.New sets it.
	Gater *Gater

	// Asking, if set, is called with a peer just before a want for blocks
	// (a want-block) goes out to it, in the goroutine that sends it: the
	// peer is about to send blocks, each message on a stream of its own,
	// and the host may admit more of its streams from then on (mesh.New
	// sets it: peers it asked get a sender's resource limits). It must
	// return promptly.
	Asking func(p peer.ID)

	// Penalty is how long a peer that sent a bad block (or advertised the
	// content and sent nothing for StallTimeout) is ignored: its messages
	// are dropped, bitswap treats it as disconnected and its requests are
	// refused. Default DefaultPenalty (10 min).
	Penalty time.Duration

	// ServeBytesPerSecond caps the bytes per second this peer serves to
	// others through bitswap. Default DefaultServeBytesPerSecond (16 MiB/s);
	// negative means no cap.
	ServeBytesPerSecond int64

	// ServeBurst is how many bytes this peer, having served nothing for a
	// while, may send at once before ServeBytesPerSecond paces it: over any
	// span T it serves at most the cap times T plus ServeBurst, and one
	// burst more for the blocks peers want urgently (a reader's next leaf,
	// served ahead of the cap's queue while its debt is within one burst:
	// urgent.go). Default (0)
	// one block (1 MiB, the largest leaf), which paces every block after
	// the first; mesh's roles set one second of the cap, so that an idle
	// holder answers a peer in a round trip rather than at the cap's pace
	// (1 MiB at 4 MiB/s takes 250 ms, longer than PeerTimeout). Values
	// under one block count as one block.
	ServeBurst int64

	// ServeConcurrency caps how many block requests of other peers are
	// served at once. Default DefaultServeConcurrency (16); negative means
	// no cap.
	ServeConcurrency int

	// ServeEvenly has this node order the requests it serves itself
	// (serveorder.go): a block a peer's reader waits on (the top priority)
	// before any peer's read-ahead, then the peer sent the fewest bytes
	// lately (those in flight included), whatever it has pending. Bitswap's
	// own order serves first the peers with the most requests pending: a
	// busy app in a flash crowd served some of its askers nine times as
	// often as others, and a seed at its cap left an app near the end of a
	// file without a block for over a second. Default false (boxo's
	// order); mesh sets it for seeds.
	ServeEvenly bool

	// MaxOutstandingBytesPerPeer is bitswap's server setting of how many
	// bytes of blocks it reads for one peer ahead of their sending. Boxo's
	// default of 1 MiB (one block) caps throughput; default
	// DefaultMaxOutstandingBytesPerPeer (2 MiB). More holds more in memory
	// and lets one peer's wants take a busy holder's sends from the others.
	MaxOutstandingBytesPerPeer int

	// Logger receives the Fetcher's logs. Nil discards them.
	Logger *slog.Logger

	// PrometheusRegisterer, if set, gets the Fetcher's metrics (prefix
	// meshcdn_fetch_). Nil means no metrics are registered. Close
	// unregisters them.
	PrometheusRegisterer prometheus.Registerer
}

func (c *Config) setDefaults() error {
	if c.Host == nil {
		return fmt.Errorf("%w: Config.Host is required", ErrConfig)
	}
	if c.Store == nil {
		return fmt.Errorf("%w: Config.Store is required", ErrConfig)
	}
	if c.PeerTimeout == 0 {
		c.PeerTimeout = DefaultPeerTimeout
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.ProviderWait == 0 {
		c.ProviderWait = DefaultProviderWait
	}
	if c.ReadAhead == 0 {
		c.ReadAhead = DefaultReadAhead
	}
	if c.WindowBytes == 0 {
		c.WindowBytes = DefaultWindowBytes
	}
	if c.OriginConcurrency == 0 {
		c.OriginConcurrency = DefaultOriginConcurrency
	}
	if c.PeerBudget == 0 {
		c.PeerBudget = DefaultPeerBudget
	}
	if c.OriginHeaderTimeout == 0 {
		c.OriginHeaderTimeout = DefaultOriginHeaderTimeout
	}
	if c.OriginIdleTimeout == 0 {
		c.OriginIdleTimeout = DefaultOriginIdleTimeout
	}
	if c.Penalty == 0 {
		c.Penalty = DefaultPenalty
	}
	if c.ServeBytesPerSecond == 0 {
		c.ServeBytesPerSecond = DefaultServeBytesPerSecond
	}
	if c.ServeConcurrency == 0 {
		c.ServeConcurrency = DefaultServeConcurrency
	}
	if c.MaxOutstandingBytesPerPeer == 0 {
		c.MaxOutstandingBytesPerPeer = DefaultMaxOutstandingBytesPerPeer
	}
	switch {
	case c.PeerTimeout < 0, c.StallTimeout < 0, c.ProviderWait < 0, c.Penalty < 0:
		return fmt.Errorf("%w: PeerTimeout, StallTimeout, ProviderWait and Penalty must not be negative", ErrConfig)
	case c.ReadAhead < 0, c.OriginConcurrency < 0, c.MaxOutstandingBytesPerPeer < 0:
		return fmt.Errorf("%w: ReadAhead, OriginConcurrency and MaxOutstandingBytesPerPeer must not be negative", ErrConfig)
	}
	return nil
}
