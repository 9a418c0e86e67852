package announce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/store"
)

// Announcer defaults. See Config.
const (
	// DefaultSummaryInterval is Config.SummaryInterval's default.
	DefaultSummaryInterval = time.Minute
	// DefaultPeerRate is Config.PeerRate's default, messages per second.
	DefaultPeerRate = 4
	// DefaultPeerBurst is Config.PeerBurst's default, messages.
	DefaultPeerBurst = 64
	// DefaultReprovideInterval is Config.ReprovideInterval's default.
	DefaultReprovideInterval = 12 * time.Hour
	// DefaultProvideTimeout is Config.ProvideTimeout's default.
	DefaultProvideTimeout = time.Minute
)

// sweepInterval is how often the table drops expired entries (lookups skip
// them anyway; the sweep frees memory and tells subscribers). A sweep of
// 100,000 entries takes about a millisecond.
const sweepInterval = time.Second

// Provide retry backoff: a failed provide (typically: no DHT peer yet) is
// retried after 1 s, doubling up to 5 min, for content still held.
const (
	provideRetryMin = time.Second
	provideRetryMax = 5 * time.Minute
)

// rejoinGap is the least time between two summaries sent because peers
// joined the topic: a burst of joins costs one summary, not one each.
const rejoinGap = 500 * time.Millisecond

// Holdings is what an Announcer needs from the content store:
// *store.Store satisfies it. A Holdings that also has a method
// Holds(cid.Cid) bool (as *store.Store does) spares the peers FETCH
// announcements of content it holds whole already (see Fetching).
type Holdings interface {
	// Roots lists the content held now.
	Roots() []store.RootInfo
	// Subscribe reports content coming and going until ctx ends; the
	// channel is then closed.
	Subscribe(ctx context.Context) <-chan store.Event
}

// rootHolder is what a Holdings may offer besides: whether it holds root
// whole now.
type rootHolder interface {
	Holds(root cid.Cid) bool
}

// ContentRouter is what an Announcer needs from a DHT: *dht.IpfsDHT
// satisfies it.
type ContentRouter = routing.ContentRouting

// Toggle turns a feature on or off; its zero value, Default, means the
// feature's documented default.
type Toggle int8

const (
	// Default leaves the feature at its documented default.
	Default Toggle = 0
	// On turns the feature on.
	On Toggle = 1
	// Off turns the feature off.
	Off Toggle = -1
)

// Config configures an Announcer. Zero fields mean the default stated beside
// them. New copies the Config; later changes to it do nothing.
type Config struct {
	// Name is the mesh's name (see ValidName). Required. The gossipsub topic
	// (Topic), the DHT protocol prefix (ProtocolPrefix) and the mDNS service
	// (MDNSService) derive from it, so meshes of different names never mix.
	Name string

	// Host is the libp2p host. Required. The Announcer does not close it.
	Host host.Host

	// PubSub is the host's gossipsub, which the Announcer joins Topic(Name)
	// on. Create it with PubSubOptions (flood publishing matters: see
	// there). Whatever its signing policy, the Announcer rejects unsigned
	// messages. The Announcer does not close a PubSub passed here.
	//
	// Nil: New creates a gossipsub with PubSubOptions and stops it on Close.
	// A host has one PubSub, so pass one if anything else on the host uses
	// pubsub (or a second Announcer for another mesh name). Note that a
	// PubSub's goroutines end shortly after it is stopped, not before Close
	// returns: go-libp2p-pubsub offers no way to wait for them.
	PubSub *pubsub.PubSub

	// DHT is the mesh's Kademlia DHT, where held roots are provided and
	// looked up when gossip knows no provider. Build it with DHTOptions(Name,
	// ...) so that it is the mesh's own DHT and not the public one. The
	// Announcer does not close a DHT passed here.
	//
	// Nil: New creates one with DHTOptions(Name, DHTMode) and closes it on
	// Close, unless DisableDHT is set.
	DHT ContentRouter

	// DisableDHT turns the DHT off: nothing is provided and lookups use
	// gossip only. Default false.
	DisableDHT bool

	// DHTMode is the mode of the DHT that New creates. Default dht.ModeAuto
	// (client until the host learns it is publicly reachable); seeds use
	// dht.ModeServer.
	DHTMode dht.ModeOpt

	// Holdings is the content this node holds and announces: usually the
	// *store.Store. Nil: the Announcer only listens.
	Holdings Holdings

	// MDNS is LAN discovery with mDNS: peers of the same mesh on the LAN
	// are found and connected to. Default On. mDNS multicasts on every
	// interface of the machine: tests turn it Off.
	MDNS Toggle

	// AnnounceAddrs sends ADDRS messages (this host's addresses) before
	// HAVE and FETCH, so that peers that hear of this node only through
	// gossip can dial it. Default false: in a 50-app cold crowd it halved
	// the origin's copies but doubled the crowd's completion time (see the
	// package documentation). ADDRS from others are read either way.
	AnnounceAddrs bool

	// SummaryInterval is how often the Announcer announces everything it
	// holds, so that late joiners and peers that missed a message learn the
	// state without asking. Each period is jittered by ±10%. Default
	// DefaultSummaryInterval (1 min).
	SummaryInterval time.Duration

	// TTL is how long this node's HAVE messages say they stay valid. It
	// must exceed SummaryInterval, whose summaries refresh it. Default
	// 3 × SummaryInterval; at most MaxTTLSeconds. Receivers cap it at their
	// TableConfig.MaxTTL (default 10 min): with a SummaryInterval above that,
	// other peers forget this one between summaries.
	TTL time.Duration

	// PeerRate and PeerBurst limit the messages accepted from one author:
	// a token bucket of PeerBurst messages refilled at PeerRate per second.
	// Messages beyond it are ignored (not forwarded, not recorded). Defaults
	// DefaultPeerRate (4/s) and DefaultPeerBurst (64, enough for a summary
	// of 28,000 roots).
	PeerRate  float64
	PeerBurst int

	// Table configures the provider table. Its Self, Addrs and Fallback
	// are set by New.
	Table TableConfig

	// ReprovideInterval is how often every held root is provided to the
	// DHT again (provider records expire after 48 h). Default
	// DefaultReprovideInterval (12 h).
	ReprovideInterval time.Duration

	// ProvideTimeout bounds one DHT provide. Default DefaultProvideTimeout
	// (1 min).
	ProvideTimeout time.Duration

	// Logger receives the Announcer's logs. Nil discards them.
	Logger *slog.Logger

	// PrometheusRegisterer, if set, gets the Announcer's metrics
	// (meshcdn_announce_*: messages published, received and refused by
	// reason, summaries, provides, table size), unregistered on Close. One
	// Announcer per registerer. Nil registers nothing.
	PrometheusRegisterer prometheus.Registerer
}

// Stats counts what an Announcer did.
type Stats struct {
	Published      uint64 // messages published
	PublishedBytes uint64 // their payload bytes
	Summaries      uint64 // summaries sent (periodic and on peers joining)
	Received       uint64 // messages accepted from others
	Unsigned       uint64 // rejected: no signature or no author
	Oversized      uint64 // rejected: more than MaxMessageSize bytes
	Malformed      uint64 // rejected: not a valid message
	UnknownVersion uint64 // ignored: a version this node does not read
	RateLimited    uint64 // ignored: the author sent too many
	Replayed       uint64 // ignored: a sequence number seen or passed (a replay)
	Provided       uint64 // roots provided to the DHT
	ProvideErrors  uint64 // provides that failed
	// Resubscribes counts peers whose pubsub streams were reset because
	// they left the topic while still connected, Redials those closed and
	// dialled again because a pubsub stream with them was missing
	// (resubscribe.go).
	Resubscribes, Redials uint64
}

type counters struct {
	published, publishedBytes, summaries, received           atomic.Uint64
	unsigned, oversized, malformed, unknownVersion, rateLimd atomic.Uint64
	replayed                                                 atomic.Uint64
	provided, provideErrors                                  atomic.Uint64
	resubscribes, redials                                    atomic.Uint64
}

// Announcer tells the mesh what this node holds and learns what others
// hold: HAVE and DROP messages on the mesh's gossipsub topic, provider
// records in the mesh's DHT, and mDNS on the LAN. What it learns is in its
// provider table (Table).
//
// It announces every root Holdings holds when started and every
// SummaryInterval, newly held roots at once (HAVE) and evicted or removed
// ones at once (DROP), and everything again when peers join the topic (so a
// peer that connects learns at once). It provides held roots to the DHT.
//
// An Announcer is safe for concurrent use. Close stops it.
type Announcer struct {
	cfg   Config
	log   *slog.Logger
	host  host.Host
	table *Table

	ps     *pubsub.PubSub
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	events *pubsub.TopicEventHandler
	router ContentRouter
	ownDHT *dht.IpfsDHT
	mdns   io.Closer
	val    *validator
	ctx    context.Context
	cancel context.CancelFunc
	psStop context.CancelFunc // stops a PubSub we created
	unreg  func()             // unregisters the metrics
	wg     sync.WaitGroup
	once   sync.Once
	closed atomic.Bool
	n      counters
	joined chan struct{} // a peer joined the topic
	// Peers that joined the topic or connected, watched until pubsub can
	// send to them (sendableLoop).
	joinsMu  sync.Mutex
	joins    map[peer.ID]time.Time // until when
	joinSig  chan struct{}
	notifiee network.Notifiee
	// meshTag is the tag under which gossipsub protects the peers of the
	// topic's mesh in the connection manager: it protects a peer at GRAFT
	// and unprotects it only at PRUNE, and a peer that disconnects is
	// dropped from the mesh without one, so every mesh peer that ever left
	// stayed protected (a seed's protected set grew with its churn, and a
	// key grafted once came back immune to trimming). The Announcer
	// unprotects a peer when its last connection closes.
	meshTag string
	// Peers to look at for pubsub state lost while connected
	// (resubscribe.go).
	repairs *repairs
	// eventHook, when set (tests), sees each topic peer event before
	// joinLoop handles it; lookHook each peer repairLoop has looked at.
	eventHook atomic.Pointer[func(pubsub.PeerEvent)]
	lookHook  atomic.Pointer[func(peer.ID)]
	resync    chan struct{} // the store lost events: summarise
	provMu    sync.Mutex
	provSet   map[cid.Cid]struct{}
	provSig   chan struct{}

	// Fetches under way (Fetching) and abandoned (Abandoned), waiting to be
	// sent: the last call for a root wins.
	fetchMu    sync.Mutex
	fetchKind  map[cid.Cid]Kind
	fetchOrder []cid.Cid
	// Fetches under way: announced again in summaries, so that peers that
	// join meanwhile learn of them, until held (a store event) or
	// abandoned.
	active map[cid.Cid]struct{}
	// pubMu orders a summary's FETCHes and the HAVE of a fetch that ends:
	// a FETCH published after the HAVE would mark this node as fetching
	// again at the peers.
	pubMu    sync.Mutex
	fetchSig chan struct{}

	// The addresses the last ADDRS gave, and when it went out.
	addrsMu   sync.Mutex
	addrsSent string
	addrsAt   time.Time
	// Where the addresses of others' ADDRS go.
	addrBook *addrBook
}

// New starts an Announcer on cfg.Host: it joins the mesh's topic, starts the
// DHT and mDNS unless turned off, and announces what cfg.Holdings holds.
func New(cfg Config) (_ *Announcer, err error) {
	if cfg, err = cfg.withDefaults(); err != nil {
		return nil, fmt.Errorf("announce: new: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Announcer{
		cfg:     cfg,
		log:     log.With("pkg", "announce", "mesh", cfg.Name),
		host:    cfg.Host,
		joined:  make(chan struct{}, 1),
		joins:   make(map[peer.ID]time.Time),
		joinSig: make(chan struct{}, 1),
		repairs: newRepairs(),
		resync:  make(chan struct{}, 1),
		provSet: make(map[cid.Cid]struct{}),
		provSig: make(chan struct{}, 1),

		fetchKind: make(map[cid.Cid]Kind),
		active:    make(map[cid.Cid]struct{}),
		fetchSig:  make(chan struct{}, 1),
		addrBook:  newAddrBook(cfg.Host.Network()),
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			a.shutdown()
		}
	}()
	if err := a.startRouting(); err != nil {
		return nil, err
	}
	if err := a.joinTopic(); err != nil {
		return nil, err
	}
	if cfg.PrometheusRegisterer != nil {
		if a.unreg, err = registerMetrics(cfg.PrometheusRegisterer, a); err != nil {
			return nil, fmt.Errorf("announce: new: %w", err)
		}
	}
	if cfg.MDNS == On {
		if a.mdns, err = startMDNS(a); err != nil {
			return nil, fmt.Errorf("announce: new: mdns: %w", err)
		}
	}
	a.startLoops()
	return a, nil
}

// withDefaults returns c with its zero fields set to their defaults, or
// an error wrapping ErrBadConfig.
func (c Config) withDefaults() (Config, error) {
	if err := checkName(c.Name); err != nil {
		return c, err
	}
	if c.Host == nil {
		return c, fmt.Errorf("%w: no Host", ErrBadConfig)
	}
	if c.SummaryInterval <= 0 {
		c.SummaryInterval = DefaultSummaryInterval
	}
	if c.TTL <= 0 {
		c.TTL = 3 * c.SummaryInterval
	}
	c.TTL = min(c.TTL, MaxTTLSeconds*time.Second)
	if c.TTL <= c.SummaryInterval {
		return c, fmt.Errorf("%w: TTL %v must exceed SummaryInterval %v", ErrBadConfig, c.TTL, c.SummaryInterval)
	}
	if c.PeerRate <= 0 {
		c.PeerRate = DefaultPeerRate
	}
	if c.PeerBurst <= 0 {
		c.PeerBurst = DefaultPeerBurst
	}
	if c.ReprovideInterval <= 0 {
		c.ReprovideInterval = DefaultReprovideInterval
	}
	if c.ProvideTimeout <= 0 {
		c.ProvideTimeout = DefaultProvideTimeout
	}
	if c.MDNS == Default {
		c.MDNS = On
	}
	return c, nil
}

// startRouting sets up gossipsub (unless Config.PubSub is given), the DHT
// (unless disabled or given) and the provider table that falls back on it.
func (a *Announcer) startRouting() (err error) {
	cfg := a.cfg
	a.ps = cfg.PubSub
	if a.ps == nil {
		psCtx, stop := context.WithCancel(context.Background())
		a.psStop = stop
		a.ps, err = pubsub.NewGossipSub(psCtx, cfg.Host, PubSubOptions()...)
		if err != nil {
			return fmt.Errorf("announce: new: pubsub: %w", err)
		}
	}
	if !cfg.DisableDHT {
		a.router = cfg.DHT
		if a.router == nil {
			a.ownDHT, err = dht.New(cfg.Host, DHTOptions(cfg.Name, cfg.DHTMode)...)
			if err != nil {
				return fmt.Errorf("announce: new: dht: %w", err)
			}
			a.router = a.ownDHT
		}
	}
	tcfg := cfg.Table
	tcfg.Self = cfg.Host.ID()
	tcfg.Addrs = cfg.Host.Peerstore().Addrs
	tcfg.Fallback = nil
	if a.router != nil {
		tcfg.Fallback = a.router
	}
	a.table = NewTable(tcfg)
	return nil
}

// joinTopic validates, joins and subscribes to the mesh's topic.
func (a *Announcer) joinTopic() (err error) {
	topic := Topic(a.cfg.Name)
	a.meshTag = "pubsub:" + topic // go-libp2p-pubsub's tag_tracer.go
	a.val = newValidator(a.cfg.Host.ID(), a.cfg.PeerRate, float64(a.cfg.PeerBurst), &a.n, a.cfg.Table.Evidence)
	if err := a.ps.RegisterTopicValidator(topic, a.val.validate, pubsub.WithValidatorInline(true)); err != nil {
		return fmt.Errorf("announce: new: validator: %w", err)
	}
	if a.topic, err = a.ps.Join(topic); err != nil {
		_ = a.ps.UnregisterTopicValidator(topic)
		return fmt.Errorf("announce: new: join %s: %w", topic, err)
	}
	if a.events, err = a.topic.EventHandler(); err != nil {
		return fmt.Errorf("announce: new: topic events: %w", err)
	}
	if a.sub, err = a.topic.Subscribe(pubsub.WithBufferSize(256)); err != nil {
		return fmt.Errorf("announce: new: subscribe: %w", err)
	}
	return nil
}

// startLoops starts the Announcer's goroutines; Close waits for them.
func (a *Announcer) startLoops() {
	var storeEvents <-chan store.Event
	if a.cfg.Holdings != nil {
		storeEvents = a.cfg.Holdings.Subscribe(a.ctx)
	}
	a.wg.Add(6)
	go a.readLoop()
	go a.joinLoop()
	go a.sendableLoop()
	go a.repairLoop()
	a.notifiee = &network.NotifyBundle{ConnectedF: func(n network.Network, c network.Conn) {
		// A peer's first connection (a second one to a peer already
		// here is no join): a peer coming back may be on the topic
		// again with no join event (sendableLoop). Its pubsub streams
		// are looked at connectGrace later (resubscribe.go).
		if len(n.ConnsToPeer(c.RemotePeer())) <= 1 {
			a.expectJoin(c.RemotePeer())
			a.repairs.lookAt(c.RemotePeer(), time.Now().Add(connectGrace), false)
		}
	}, DisconnectedF: func(n network.Network, c network.Conn) {
		if len(n.ConnsToPeer(c.RemotePeer())) == 0 {
			a.host.ConnManager().Unprotect(c.RemotePeer(), a.meshTag)
		}
	}}
	a.host.Network().Notify(a.notifiee)
	go a.tickLoop()
	go a.fetchLoop()
	if storeEvents != nil {
		a.wg.Add(1)
		go a.storeLoop(storeEvents)
	}
	if a.router != nil && a.cfg.Holdings != nil {
		a.wg.Add(1)
		go a.provideLoop()
	}
}

// Table returns the provider table. It stays readable after Close.
func (a *Announcer) Table() *Table { return a.table }

// Topic returns the gossipsub topic the Announcer publishes on.
func (a *Announcer) Topic() string { return Topic(a.cfg.Name) }

// Config returns the configuration in effect, defaults filled in.
func (a *Announcer) Config() Config { return a.cfg }

// Stats returns what the Announcer has done so far.
func (a *Announcer) Stats() Stats {
	return Stats{
		Published:      a.n.published.Load(),
		PublishedBytes: a.n.publishedBytes.Load(),
		Summaries:      a.n.summaries.Load(),
		Received:       a.n.received.Load(),
		Unsigned:       a.n.unsigned.Load(),
		Oversized:      a.n.oversized.Load(),
		Malformed:      a.n.malformed.Load(),
		UnknownVersion: a.n.unknownVersion.Load(),
		RateLimited:    a.n.rateLimd.Load(),
		Replayed:       a.n.replayed.Load(),
		Provided:       a.n.provided.Load(),
		ProvideErrors:  a.n.provideErrors.Load(),
		Resubscribes:   a.n.resubscribes.Load(),
		Redials:        a.n.redials.Load(),
	}
}

// Announce sends HAVE for roots now, without waiting for the store. It is
// for content held outside Holdings; content Holdings reports is announced
// without it.
func (a *Announcer) Announce(ctx context.Context, roots ...cid.Cid) error {
	if a.closed.Load() {
		return fmt.Errorf("announce: announce: %w", ErrClosed)
	}
	if err := a.publish(ctx, Have, roots); err != nil {
		return fmt.Errorf("announce: announce: %w", err)
	}
	a.queueProvide(roots)
	return nil
}

// FetchingTTL is the TTL of the FETCH that Fetching sends: long enough for
// a fetch of some hundreds of MiB from an origin, short enough that a node
// that stopped without a DROP is soon forgotten. A fetch that ends with the
// content stored is announced again, as held, with Config.TTL.
const FetchingTTL = 2 * time.Minute

// Fetching announces root, with a FETCH of FetchingTTL, when this node
// starts to fetch it from the origin and no peer is known to hold it. Peers
// that want the same content then ask this node, and its bitswap server
// sends them each block as it arrives: a flash crowd that starts cold pays
// the origin for about one copy instead of one per node. Peers list this
// node in Table.Fetchers (for striping) until it announces root held
// (HAVE) or abandoned (DROP). It does not provide root to the DHT.
//
// The announcement goes out at once, with no batching delay: the fetch
// loop wakes on the call and publishes whatever is queued by then (a burst
// of calls while a publish is under way shares the next message), so that
// a burst of fetches does not use up the message rate that peers accept
// from this node. ctx is not used, since nothing waits.
// fetch.Config.Advertiser calls it.
//
// A root that Holdings holds whole already (if it can say: see Holdings)
// is not announced: its HAVE went out, or is on its way, and ends any
// fetch of it at the peers. Kept as a fetch under way, it would be
// announced as such in every summary once the content was evicted, for as
// long as the node ran (the fetch package tells of a fetch from a
// goroutine of its own, which may run after the fetch stored the content).
func (a *Announcer) Fetching(ctx context.Context, root cid.Cid) error {
	return a.queueFetch(root, Fetch)
}

// Abandoned announces, with a DROP, that a fetch Fetching announced ended
// without the content stored whole, so that peers stop asking this node
// for it. Like Fetching it is batched. fetch.Config.Advertiser calls it.
func (a *Announcer) Abandoned(ctx context.Context, root cid.Cid) error {
	return a.queueFetch(root, Drop)
}

func (a *Announcer) queueFetch(root cid.Cid, k Kind) error {
	if a.closed.Load() {
		return fmt.Errorf("announce: %v for a fetch of %s: %w", k, root, ErrClosed)
	}
	a.fetchMu.Lock()
	if k == Fetch && a.holds(root) {
		// Under fetchMu: a HAVE that storeLoop handles after this look
		// still ends what is queued here.
		a.fetchMu.Unlock()
		return nil
	}
	if _, ok := a.fetchKind[root]; !ok {
		a.fetchOrder = append(a.fetchOrder, root)
	}
	a.fetchKind[root] = k
	if k == Fetch {
		a.active[root] = struct{}{}
	} else {
		delete(a.active, root)
	}
	a.fetchMu.Unlock()
	signal(a.fetchSig)
	return nil
}

// holds reports whether Holdings holds root whole now; false when it
// cannot tell.
func (a *Announcer) holds(root cid.Cid) bool {
	h, ok := a.cfg.Holdings.(rootHolder)
	return ok && h.Holds(root)
}

// fetchLoop sends what Fetching and Abandoned queue.
func (a *Announcer) fetchLoop() {
	defer a.wg.Done()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.fetchSig:
			a.flushFetches(a.ctx)
		}
	}
}

// flushFetches sends the queued fetch announcements: DROPs, then FETCHes
// with FetchingTTL. A fetch that ended held meanwhile (its HAVE went out,
// which ends it at the peers) is not announced: a FETCH after the HAVE
// would list this node as fetching again until FetchingTTL.
func (a *Announcer) flushFetches(ctx context.Context) {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	a.fetchMu.Lock()
	var fetches, drops []cid.Cid
	for _, r := range a.fetchOrder {
		if a.fetchKind[r] == Fetch {
			if _, ok := a.active[r]; ok {
				fetches = append(fetches, r)
			}
		} else {
			drops = append(drops, r)
		}
	}
	clear(a.fetchKind)
	a.fetchOrder = a.fetchOrder[:0]
	a.fetchMu.Unlock()
	if a.topic == nil {
		return
	}
	if err := a.publish(ctx, Drop, drops); err != nil && ctx.Err() == nil {
		a.log.Warn("drop announcement failed", "err", err)
	}
	if err := a.publishTTL(ctx, Fetch, FetchingTTL, fetches); err != nil && ctx.Err() == nil {
		a.log.Warn("fetch announcement failed", "err", err)
	}
}

// Close stops announcing and listening, closes the DHT and PubSub if New
// created them, closes the table and waits for every goroutine the Announcer
// started. It does not close the Host, nor a PubSub or DHT from Config.
// Close is idempotent: later calls return an error wrapping ErrClosed.
func (a *Announcer) Close() error {
	err := fmt.Errorf("announce: close: %w", ErrClosed)
	a.once.Do(func() { err = a.shutdown() })
	return err
}

func (a *Announcer) shutdown() error {
	a.closed.Store(true)
	// Fetches abandoned as the node closes (its Fetcher closes first) are
	// told while the topic still works.
	flushCtx, cancelFlush := context.WithTimeout(a.ctx, time.Second)
	a.flushFetches(flushCtx)
	cancelFlush()
	a.cancel()
	if a.notifiee != nil {
		a.host.Network().StopNotify(a.notifiee)
	}
	var errs []error
	if a.mdns != nil {
		errs = append(errs, a.mdns.Close())
	}
	if a.events != nil {
		a.events.Cancel()
	}
	if a.sub != nil {
		a.sub.Cancel()
	}
	a.wg.Wait()
	if a.topic != nil {
		if err := a.topic.Close(); err != nil {
			errs = append(errs, fmt.Errorf("topic: %w", err))
		}
		if err := a.ps.UnregisterTopicValidator(a.topic.String()); err != nil {
			errs = append(errs, fmt.Errorf("validator: %w", err))
		}
	}
	if a.table != nil {
		_ = a.table.Close()
	}
	if a.ownDHT != nil {
		if err := a.ownDHT.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dht: %w", err))
		}
	}
	if a.psStop != nil {
		a.psStop()
	}
	if a.unreg != nil {
		a.unreg()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("announce: close: %w", err)
	}
	return nil
}

// readLoop records the accepted messages of other peers in the table.
func (a *Announcer) readLoop() {
	defer a.wg.Done()
	for {
		msg, err := a.sub.Next(a.ctx)
		if err != nil {
			return
		}
		self := a.host.ID()
		if msg.ReceivedFrom == self || msg.GetFrom() == self {
			continue // our own
		}
		m, ok := msg.ValidatorData.(Message)
		if !ok { // cannot happen: the validator sets it
			continue
		}
		// gossipsub keeps the message for its history windows: the decoded
		// form is this loop's alone (16 MiB of a sybil flood's roots, held
		// twice over, beside the raw bytes gossip needs).
		msg.ValidatorData = nil
		u := update{peer: msg.GetFrom(), ttl: m.TTL, src: FromGossip, seq: seqno(msg), fetching: m.Kind == Fetch}
		switch m.Kind {
		case Have, Fetch:
			a.table.update(u, m.Roots)
		case Drop:
			a.table.remove(u.peer, u.seq, m.Roots)
		case Addrs:
			a.addrBook.record(u.peer, m.Addrs, m.TTL)
		}
	}
}

// joinLoop hands peers joining the topic to sendableLoop, and those
// leaving it to repairLoop (resubscribe.go).
func (a *Announcer) joinLoop() {
	defer a.wg.Done()
	for {
		ev, err := a.events.NextPeerEvent(a.ctx)
		if err != nil {
			return
		}
		if hook := a.eventHook.Load(); hook != nil {
			(*hook)(ev)
		}
		a.log.Debug("topic peer event", "peer", ev.Peer, "type", ev.Type)
		switch ev.Type {
		case pubsub.PeerJoin:
			a.expectJoin(ev.Peer)
		case pubsub.PeerLeave:
			a.noteLeave(ev.Peer)
		}
	}
}

// Sendable polling: see sendableLoop.
const (
	// sendablePoll is the first wait between looks, after a peer joins
	// or connects; each look after it waits twice as long, up to
	// sendablePollMax.
	sendablePoll    = 5 * time.Millisecond
	sendablePollMax = 200 * time.Millisecond
	// sendableTimeout is how long a peer that joined or connected is
	// watched for pubsub to be able to send to it: a stream opened over a
	// slow or relayed link, or on a loaded machine, can take seconds.
	sendableTimeout = 10 * time.Second
	// maxWatched caps the peers watched at once: a flood of connections
	// costs at most this much memory and work per look (a summary goes
	// out anyway, to those watched, once one of them joins).
	maxWatched = 4096
)

// expectJoin has sendableLoop watch p, which joined the topic or
// connected.
func (a *Announcer) expectJoin(p peer.ID) {
	a.joinsMu.Lock()
	_, had := a.joins[p]
	if !had && len(a.joins) >= maxWatched {
		a.joinsMu.Unlock()
		a.log.Debug("too many peers joining to watch", "peer", p)
		return
	}
	a.joins[p] = time.Now().Add(sendableTimeout)
	a.joinsMu.Unlock()
	signal(a.joinSig)
}

// sendableLoop turns the peers expectJoin watches into a summary once
// pubsub can send to them. go-libp2p-pubsub announces a join when p's
// subscription arrives, which can be before its own send queue to p
// exists; a message published then is dropped for p ("No send queue for
// peer"). Topic.ListPeers lists only peers with a send queue, and nothing
// signals when p gets one: poll. A peer's first connection is watched as
// well as joins: pubsub drops a leave and a join of the same peer that
// wait unread together, so a peer that drops off and comes back quickly
// can rejoin with no join event at all. (A connected peer that never
// joins the topic, a DHT client say, costs looks for sendableTimeout.)
func (a *Announcer) sendableLoop() {
	defer a.wg.Done()
	poll := time.NewTimer(time.Hour)
	defer poll.Stop()
	every := sendablePoll
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.joinSig:
			every = sendablePoll
		case <-poll.C:
			// Peers that connect and never join (a DHT client, say) are
			// watched for sendableTimeout: look ever less often.
			every = min(2*every, sendablePollMax)
		}
		joined, more := a.sendable()
		if joined {
			signal(a.joined)
		}
		if more {
			poll.Reset(every)
		}
	}
}

// sendable settles the watched peers pubsub can now send to, and those
// watched too long; it reports whether one joined and whether any are left.
func (a *Announcer) sendable() (joined, more bool) {
	a.joinsMu.Lock()
	defer a.joinsMu.Unlock()
	if len(a.joins) == 0 {
		return false, false
	}
	on := make(map[peer.ID]struct{})
	for _, p := range a.topic.ListPeers() {
		on[p] = struct{}{}
	}
	now := time.Now()
	for p, until := range a.joins {
		_, sendable := on[p]
		switch {
		case sendable:
			delete(a.joins, p)
			joined = true
		case now.After(until):
			delete(a.joins, p)
		}
	}
	return joined, len(a.joins) > 0
}

func (a *Announcer) jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// tickLoop sends summaries (periodic, on join, on resync) and sweeps the
// table.
func (a *Announcer) tickLoop() {
	defer a.wg.Done()
	summary := time.NewTimer(0) // a first summary at start
	defer summary.Stop()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	gapArmed := false
	var last time.Time
	send := func(why string) {
		if len(a.topic.ListPeers()) == 0 {
			a.log.Debug("summary skipped: no peers", "why", why)
			return // nobody to tell; a peer joining triggers a summary
		}
		last = time.Now()
		a.log.Debug("summary", "why", why)
		a.summarise()
	}
	for {
		select {
		case <-a.ctx.Done():
			gap.Stop()
			return
		case <-summary.C:
			send("periodic")
			summary.Reset(a.jitter(a.cfg.SummaryInterval))
		case <-a.resync:
			send("resync")
		case <-a.joined:
			if wait := rejoinGap - time.Since(last); wait > 0 {
				if !gapArmed {
					gap.Reset(wait)
					gapArmed = true
				}
				continue
			}
			send("join")
		case <-gap.C:
			gapArmed = false
			send("join")
		case <-sweep.C:
			a.table.Sweep()
		}
	}
}

// summarise announces everything held, and the fetches under way (FETCH,
// FetchingTTL) that are not held by now.
func (a *Announcer) summarise() {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	var infos []store.RootInfo
	if a.cfg.Holdings != nil {
		infos = a.cfg.Holdings.Roots()
	}
	roots := make([]cid.Cid, len(infos))
	held := make(map[cid.Cid]struct{}, len(infos))
	for i, ri := range infos {
		roots[i] = ri.Cid
		held[ri.Cid] = struct{}{}
	}
	a.fetchMu.Lock()
	var fetches []cid.Cid
	for r := range a.active {
		if _, ok := held[r]; ok {
			delete(a.active, r)
		} else {
			fetches = append(fetches, r)
		}
	}
	a.fetchMu.Unlock()
	if len(roots) == 0 && len(fetches) == 0 {
		return
	}
	a.n.summaries.Add(1)
	a.log.Debug("summarising", "roots", len(roots), "fetches", len(fetches))
	if err := a.publish(a.ctx, Have, roots); err != nil && a.ctx.Err() == nil {
		a.log.Warn("summary failed", "err", err)
	}
	if err := a.publishTTL(a.ctx, Fetch, FetchingTTL, fetches); err != nil && a.ctx.Err() == nil {
		a.log.Warn("summary of fetches failed", "err", err)
	}
}

// storeLoop announces what the store adds and drops, batching the events
// that are already waiting into one message per kind.
func (a *Announcer) storeLoop(events <-chan store.Event) {
	defer a.wg.Done()
	for ev := range events {
		kinds := map[cid.Cid]store.EventKind{ev.Root: ev.Kind}
		order := []cid.Cid{ev.Root}
		missed := ev.Missed
	drain:
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					break drain
				}
				if _, seen := kinds[ev.Root]; !seen {
					order = append(order, ev.Root)
				}
				kinds[ev.Root] = ev.Kind
				missed += ev.Missed
			default:
				break drain
			}
		}
		var haves, drops []cid.Cid
		for _, r := range order {
			if kinds[r] == store.Added {
				haves = append(haves, r)
			} else {
				drops = append(drops, r)
			}
		}
		a.pubMu.Lock()
		a.fetchMu.Lock()
		for _, r := range haves {
			delete(a.active, r) // the HAVE ends the fetch at the peers
		}
		a.fetchMu.Unlock()
		if err := a.publish(a.ctx, Drop, drops); err != nil && a.ctx.Err() == nil {
			a.log.Warn("drop announcement failed", "err", err)
		}
		if err := a.publish(a.ctx, Have, haves); err != nil && a.ctx.Err() == nil {
			a.log.Warn("have announcement failed", "err", err)
		}
		a.pubMu.Unlock()
		a.queueProvide(haves)
		if missed > 0 {
			// We lost events: what we hold is no longer what we said.
			// A summary restores HAVEs; lost DROPs expire at the peers.
			a.log.Warn("store events lost", "missed", missed)
			signal(a.resync)
		}
	}
}

// AddrsTTL is how long peers may dial the addresses an ADDRS message gives.
const AddrsTTL = 30 * time.Minute

// addrsEvery is the least time between two ADDRS messages with the same
// addresses: a node sends ADDRS before a HAVE or FETCH (a summary's too)
// unless it sent one within addrsEvery. Not only once: gossip relays a
// HAVE or FETCH to peers that missed an earlier ADDRS (in a crowd that
// starts cold, the first announcements go out before the gossipsub mesh
// forms and reach only the author's neighbours), and an ADDRS costs about
// 60 bytes.
const addrsEvery = 5 * time.Second

// announceAddrs publishes this host's addresses (ADDRS) when they are due:
// a peer that learns from a HAVE or FETCH, relayed by others, that this node
// holds or fetches content can then dial it. Without them it knows the peer
// only by ID and can ask it nothing unless they happen to be connected.
func (a *Announcer) announceAddrs(ctx context.Context) {
	addrs := a.host.Addrs()
	if len(addrs) == 0 {
		return
	}
	key := fmt.Sprint(addrs)
	now := time.Now()
	a.addrsMu.Lock()
	due := key != a.addrsSent || now.Sub(a.addrsAt) >= addrsEvery
	if due {
		a.addrsSent, a.addrsAt = key, now
	}
	a.addrsMu.Unlock()
	if !due {
		return
	}
	m, err := EncodeAddrs(AddrsTTL, addrs)
	if err == nil {
		err = a.send(ctx, Addrs, [][]byte{m})
	}
	if err != nil {
		a.addrsMu.Lock()
		a.addrsSent = "" // try again with the next announcement
		a.addrsMu.Unlock()
		a.log.Debug("addresses not announced", "err", err)
	}
}

// publish sends roots as messages of kind k; a HAVE says Config.TTL.
func (a *Announcer) publish(ctx context.Context, k Kind, roots []cid.Cid) error {
	var ttl time.Duration
	if k == Have {
		ttl = a.cfg.TTL
	}
	return a.publishTTL(ctx, k, ttl, roots)
}

// publishTTL sends roots as messages of kind k with the given ttl.
func (a *Announcer) publishTTL(ctx context.Context, k Kind, ttl time.Duration, roots []cid.Cid) error {
	if len(roots) == 0 {
		return nil
	}
	msgs, err := Encode(k, ttl, roots)
	if err != nil {
		return err
	}
	if k != Drop && a.cfg.AnnounceAddrs {
		a.announceAddrs(ctx)
	}
	return a.send(ctx, k, msgs)
}

// send publishes msgs, of kind k.
func (a *Announcer) send(ctx context.Context, k Kind, msgs [][]byte) error {
	for _, m := range msgs {
		// Counted before it leaves, so that no peer can have it before
		// the counter says so; taken back if publishing fails.
		a.n.published.Add(1)
		a.n.publishedBytes.Add(uint64(len(m)))
		if err := a.topic.Publish(ctx, m); err != nil {
			a.n.published.Add(^uint64(0))
			a.n.publishedBytes.Add(^uint64(len(m) - 1))
			return fmt.Errorf("publish %v: %w", k, err)
		}
	}
	return nil
}

func (a *Announcer) queueProvide(roots []cid.Cid) {
	if a.router == nil || len(roots) == 0 {
		return
	}
	a.provMu.Lock()
	for _, r := range roots {
		a.provSet[r] = struct{}{}
	}
	a.provMu.Unlock()
	signal(a.provSig)
}

// provideLoop provides queued roots to the DHT one at a time, and every held
// root at start and every ReprovideInterval.
func (a *Announcer) provideLoop() {
	defer a.wg.Done()
	reprovide := time.NewTicker(a.cfg.ReprovideInterval)
	defer reprovide.Stop()
	queueAll := func() {
		infos := a.cfg.Holdings.Roots()
		roots := make([]cid.Cid, len(infos))
		for i, ri := range infos {
			roots[i] = ri.Cid
		}
		a.queueProvide(roots)
	}
	queueAll()
	failed := make(map[cid.Cid]struct{})
	backoff := provideRetryMin
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-reprovide.C:
			queueAll()
		case <-retry.C:
			a.queueProvide(a.stillHeld(failed))
			clear(failed)
		case <-a.provSig:
		}
		hadFailures := len(failed) > 0
		for {
			a.provMu.Lock()
			var next cid.Cid
			for c := range a.provSet {
				next = c
				delete(a.provSet, c)
				break
			}
			a.provMu.Unlock()
			if !next.Defined() || a.ctx.Err() != nil {
				break
			}
			ctx, cancel := context.WithTimeout(a.ctx, a.cfg.ProvideTimeout)
			start := time.Now()
			err := a.router.Provide(ctx, next, true)
			cancel()
			if err != nil {
				a.n.provideErrors.Add(1)
				if a.ctx.Err() == nil {
					a.log.Debug("provide failed", "cid", next, "err", err)
				}
				failed[next] = struct{}{}
				continue
			}
			a.n.provided.Add(1)
			backoff = provideRetryMin
			a.log.Debug("provided", "cid", next, "dur", time.Since(start))
		}
		if len(failed) > 0 && !hadFailures {
			retry.Reset(backoff)
			backoff = min(2*backoff, provideRetryMax)
		}
	}
}

// stillHeld returns the roots of rs that Holdings holds now. A failed
// provide is tried again only for content still held: on a node whose
// provides fail (no DHT server among its peers), every root it had ever
// held, long evicted, stayed in the retry set and was provided again at
// every retry.
func (a *Announcer) stillHeld(rs map[cid.Cid]struct{}) []cid.Cid {
	if len(rs) == 0 {
		return nil
	}
	var held []cid.Cid
	for _, ri := range a.cfg.Holdings.Roots() {
		if _, ok := rs[ri.Cid]; ok {
			held = append(held, ri.Cid)
		}
	}
	return held
}

// signal wakes whoever waits on ch (a channel of capacity 1) without
// blocking: a signal already pending stands for this one.
func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
