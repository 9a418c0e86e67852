package mesh

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/announce"
	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/store"
)

// ErrClosed is returned by every call on a closed Node.
var ErrClosed = errors.New("mesh: node closed")

// Node is one peer of the mesh: a libp2p host with the mesh's DHT, gossipsub
// announcements, bitswap on a quota-bound store, and a fetcher that races
// peers against the origin. Make one with New; Close releases everything.
// A Node is safe for concurrent use.
type Node struct {
	cfgMu   sync.Mutex // guards cfg.Bootstrap; serialises SetBootstrap
	cfg     Config
	log     *slog.Logger
	host    host.Host
	store   *store.Store
	ann     *announce.Announcer
	sumSvc  *announce.SummaryService
	fetcher *fetch.Fetcher
	served  atomic.Pointer[fetch.Fetcher] // the fetcher, for evidence
	client  *http.Client
	lock    *os.File    // the DataDir lock
	self    peer.ID     // known before host is set (AutoRelay asks at once)
	asked   *askedPeers // peers asked for blocks lately: a sender's limits (limits.go)

	boot      bootstrap
	summaries *summaries
	metrics   *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// spawnMu orders spawn's Add to wg before Close's Wait: Close sets
	// closed under it.
	spawnMu sync.Mutex
	// probing holds the IDs of the connections being probed (stale.go).
	probing sync.Map

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// ErrDataDirInUse is returned (wrapped) by New when another node, in this
// process or another, runs on the same DataDir: an app can tell its user
// that it is already running.
var ErrDataDirInUse = errors.New("mesh: data dir in use by another node")

// New starts a node. ctx bounds the start only (opening the store, starting
// the host); the node runs until Close. A Config it cannot use fails with a
// *ConfigError (errors.Is ErrConfig) naming the field; a DataDir another
// node holds fails with ErrDataDirInUse. Bootstrap peers are dialled in the
// background and kept connected: Ready and WaitPeers wait for them.
func New(ctx context.Context, cfg Config) (_ *Node, err error) {
	explicit := slices.Clone(cfg.ListenAddrs) // the caller's own: each must listen
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.ListenAddrs = append([]string(nil), cfg.ListenAddrs...)
	cfg.Bootstrap = append([]string(nil), cfg.Bootstrap...)
	bootstrap, err := parseBootstrap("Bootstrap", cfg.Bootstrap)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, client: cfg.HTTPClient, summaries: newSummaries(), asked: newAskedPeers()}
	n.boot.keepers = make(map[peer.ID]*keeper)
	n.boot.addrs = bootstrap // AutoRelay may ask before the keepers start
	n.boot.changed = make(chan struct{})
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.log = n.log.With("pkg", "mesh")
	n.ctx, n.cancel = context.WithCancel(context.Background())
	registerDependencyLogs(n, cfg.Logger) // see log.go
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.client == nil {
		n.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	key, err := n.openDataDir(ctx)
	if err != nil {
		return nil, err
	}
	if n.self, err = peer.IDFromPrivateKey(key); err != nil {
		return nil, fmt.Errorf("mesh: identity: %w", err)
	}
	if n.metrics, err = newMetrics(cfg, key); err != nil {
		return nil, err
	}
	if n.metrics != nil {
		n.cfg.PrometheusLabels = n.metrics.labels // Config shows the default in effect
	}
	reg := n.metrics.registerer() // nil without PrometheusRegisterer
	gate := new(fetch.Gater)      // shared by the host and the fetcher's bitswap filter
	opts, err := hostOptions(cfg, key, reg, n.relayCandidates, gate, n.asked)
	if err != nil {
		return nil, err
	}
	opts, addrs, err := listenLater(opts)
	if err != nil {
		return nil, fmt.Errorf("mesh: libp2p host: %w", err)
	}
	if n.host, err = libp2p.New(opts...); err != nil {
		return nil, fmt.Errorf("mesh: libp2p host: %w", err)
	}
	if err := n.listen(addrs, explicit); err != nil {
		return nil, err // the deferred Close closes the host
	}

	if err := n.startAnnounce(reg); err != nil {
		return nil, err
	}
	if err := n.startFetcher(reg, gate); err != nil {
		return nil, err
	}
	n.served.Store(n.fetcher)
	if err := n.metrics.registerNode(n); err != nil {
		return nil, err
	}
	if err := n.startWatchers(); err != nil {
		return nil, err
	}
	n.setBootstrap(bootstrap)
	n.boot.mu.Lock()
	n.askConnected() // peers that dialled in before the watchers started
	n.boot.mu.Unlock()
	n.log.Info("node started", "peer", n.host.ID(), "role", string(cfg.Role), "addrs", len(n.host.Addrs()))
	return n, nil
}

// startFetcher starts the node's fetcher on its host, store and provider
// table; gate is the host's connection gater, shared with the fetcher's
// bitswap filter.
func (n *Node) startFetcher(reg prometheus.Registerer, gate *fetch.Gater) (err error) {
	cfg := n.cfg
	var adv fetch.Advertiser
	if cfg.AnnounceFetches == On {
		adv = n.ann
	}
	n.fetcher, err = fetch.New(fetch.Config{
		Advertiser:           adv,
		Host:                 newReuseHost(n.host), // bitswap streams to pages stay open (browsers.go)
		Store:                n.store,
		Gater:                gate,
		Asking:               n.asked.ask, // peers asked for blocks may send them (limits.go)
		Providers:            providers{n: n, table: n.ann.Table()},
		Crowd:                n.ann.Table(), // who else is fetching, and who holds it (fetch.Holders): striping
		HTTPClient:           n.client,
		PeerTimeout:          cfg.PeerTimeout,
		NoStriping:           cfg.FetchStriping == Off,
		WindowBytes:          cfg.FetchWindowBytes,
		PeerBudget:           cfg.FetchPeerBudget,
		OriginHeaderTimeout:  cfg.OriginHeaderTimeout,
		OriginIdleTimeout:    cfg.OriginIdleTimeout,
		ServeBytesPerSecond:  cfg.ServeBytesPerSecond,
		ServeBurst:           cfg.ServeBurst,
		ServeConcurrency:     cfg.ServeConcurrency,
		ServeEvenly:          cfg.ServeEvenly == On,
		Logger:               cfg.Logger,
		PrometheusRegisterer: reg,
		ClosedError:          ErrClosed, // a Read that Close cut matches it
	})
	if err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	return nil
}

// openDataDir locks the DataDir, loads (or makes) the identity key and
// opens the store; an InMemory node gets a new key and an in-memory store.
func (n *Node) openDataDir(ctx context.Context) (crypto.PrivKey, error) {
	cfg := n.cfg
	storeCfg := store.Config{InMemory: cfg.InMemory, Quota: cfg.Quota, Logger: cfg.Logger, ReleaseMapped: cfg.ReleaseMapped,
		ReleaseQuietHeap: store.DefaultReleaseMapped}
	var key crypto.PrivKey
	var err error
	if cfg.InMemory {
		key, _, err = crypto.GenerateEd25519Key(rand.Reader)
	} else {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("mesh: data dir: %w", err)
		}
		if n.lock, err = lockDataDir(filepath.Join(cfg.DataDir, "node.lock")); err != nil {
			return nil, err
		}
		key, err = loadIdentity(filepath.Join(cfg.DataDir, "identity.key"))
		storeCfg.Dir = filepath.Join(cfg.DataDir, "blocks")
	}
	if err != nil {
		return nil, fmt.Errorf("mesh: identity: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if n.store, err = store.New(storeCfg); err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	return key, nil
}

// startAnnounce starts the announcer (gossip, DHT, mDNS) and the summary
// service on the host.
func (n *Node) startAnnounce(reg prometheus.Registerer) error {
	cfg := n.cfg
	mode := dht.ModeAuto
	if cfg.Role == RoleSeed {
		mode = dht.ModeServer
	}
	var err error
	n.ann, err = announce.New(announce.Config{
		Name:          cfg.Name,
		Host:          n.host,
		Holdings:      n.store,
		MDNS:          cfg.MDNS,
		AnnounceAddrs: cfg.AnnounceAddrs == On,
		DisableDHT:    cfg.DisableDHT,
		DHTMode:       mode,
		Logger:        cfg.Logger,
		Table:         announce.TableConfig{Evidence: n.evidence},

		PrometheusRegisterer: reg,
	})
	if err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	sumCfg := announce.SummaryConfig{Name: cfg.Name, Host: summaryHost(n.host), Holdings: n.store, Logger: cfg.Logger}
	if cfg.Role == RoleSeed {
		sumCfg.Table = n.ann.Table() // seeds tell who else holds what
	}
	if n.sumSvc, err = announce.NewSummaryService(sumCfg); err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	return nil
}

// startWatchers starts the goroutines that follow connections (keepers'
// redials and summary requests) and the machine's network.
func (n *Node) startWatchers() error {
	conns, err := n.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return fmt.Errorf("mesh: subscribe: %w", err)
	}
	ids, err := n.host.EventBus().Subscribe([]any{new(event.EvtPeerIdentificationCompleted), new(event.EvtPeerIdentificationFailed)})
	if err != nil {
		conns.Close()
		return fmt.Errorf("mesh: subscribe: %w", err)
	}
	n.wg.Add(3)
	go func() {
		defer n.wg.Done()
		n.watchConnections(conns)
	}()
	go func() {
		defer n.wg.Done()
		watchNetwork(n.ctx, readNetState, netWatchEvery, n.networkChanged) // netwatch.go
	}()
	n.watchStaleConns() // stale.go
	go func() {
		defer n.wg.Done()
		n.watchIdentify(ids)
	}()
	return nil
}

// relayCandidates is AutoRelay's peer source: the bootstrap peers, the
// mesh's seeds, whose relay services an app behind NAT takes reservations
// on.
func (n *Node) relayCandidates(ctx context.Context, num int) <-chan peer.AddrInfo {
	ais := slices.DeleteFunc(n.bootstrapPeers(), func(ai peer.AddrInfo) bool { return ai.ID == n.self })
	if len(ais) > num {
		ais = ais[:num]
	}
	ch := make(chan peer.AddrInfo, len(ais))
	for _, ai := range ais {
		ch <- ai
	}
	close(ch)
	return ch
}

func hostOptions(cfg Config, key crypto.PrivKey, reg prometheus.Registerer, relays autorelay.PeerSource, gate *fetch.Gater, asked *askedPeers) ([]libp2p.Option, error) {
	lopts, err := limitOptions(cfg, asked)
	if err != nil {
		return nil, err
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.UserAgent("meshcdn/0"),
		libp2p.EnableRelay(),
	}
	opts = append(opts, lopts...)
	if reg != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(reg))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if cfg.Role == RoleApp {
		opts = append(opts, libp2p.EnableHolePunching())
	}
	if cfg.Role == RoleApp && cfg.RelayReservations > 0 {
		// Behind NAT (AutoNAT finds the host not publicly reachable), hold
		// a reservation on a seed's relay service, so that other peers
		// can reach this one and hole punching has a relay to start from.
		opts = append(opts, libp2p.EnableAutoRelayWithPeerSource(relays,
			autorelay.WithMinCandidates(1),
			autorelay.WithNumRelays(cfg.RelayReservations),
			autorelay.WithBootDelay(0),
			autorelay.WithBackoff(cfg.BootstrapBackoff.Max),
			autorelay.WithMinInterval(cfg.BootstrapBackoff.Max)))
	}
	if cfg.NATPortMap == On {
		opts = append(opts, libp2p.NATPortMap())
	}
	if cfg.RelayService == On {
		opts = append(opts, relayServiceOption(cfg), libp2p.ForceReachabilityPublic())
	}
	opts = append(opts, cfg.Libp2pOptions...)
	return append(opts, gaterOption(gate)), nil
}

// listenLater returns opts changed so that the host they make listens on
// nothing, and the addresses it would have listened on, ours and those of
// Config.Libp2pOptions (which may add some or set none), for New to listen
// on once the host is made. go-libp2p's New, when it can listen on none of
// its addresses, returns without closing the swarm, transports and
// managers it started, whose goroutines then outlive the failed New; a
// host that cannot listen once made is closed with everything it started.
// Options that leave the addresses unset (libp2p's defaults apply) are
// returned as they are.
func listenLater(opts []libp2p.Option) ([]libp2p.Option, []ma.Multiaddr, error) {
	var c libp2p.Config
	if err := c.Apply(opts...); err != nil {
		return nil, nil, err
	}
	if c.ListenAddrs == nil {
		return opts, nil, nil
	}
	none := func(c *libp2p.Config) error {
		c.ListenAddrs = []ma.Multiaddr{} // not nil: libp2p's default addresses stay out
		return nil
	}
	return append(slices.Clip(opts), none), c.ListenAddrs, nil
}

// listen has the host listen on each of addrs. One that the caller gave in
// Config.ListenAddrs (explicit) and that fails is a *ConfigError naming it:
// a seed whose fixed port was taken started on its other addresses alone,
// and the manifest's multiaddrs of it went dead without a word. Others
// (role defaults, browser transports, Libp2pOptions) that fail are logged;
// New fails only when none listens, as go-libp2p does.
func (n *Node) listen(addrs []ma.Multiaddr, explicit []string) error {
	sw, ok := n.host.Network().(*swarm.Swarm)
	if !ok { // a host of Libp2pOptions' making: as go-libp2p does
		if err := n.host.Network().Listen(addrs...); err != nil {
			return fmt.Errorf("mesh: libp2p host: %w", err)
		}
		return nil
	}
	// In the swarm's order (QUIC before WebTransport and WebRTC on its
	// port), one at a time for each address's own error.
	addrs = slices.Clone(addrs)
	slices.SortStableFunc(addrs, func(a, b ma.Multiaddr) int { return listenOrder(sw, a) - listenOrder(sw, b) })
	var failed []error
	for _, a := range addrs {
		err := sw.AddListenAddr(a)
		if err == nil {
			continue
		}
		for i, e := range explicit {
			if m, perr := ma.NewMultiaddr(e); perr == nil && m.Equal(a) {
				return configErr(fmt.Sprintf("ListenAddrs[%d]", i), e, "cannot listen: "+err.Error())
			}
		}
		n.log.Warn("cannot listen on an address", "addr", a, "err", err)
		failed = append(failed, fmt.Errorf("%s: %w", a, err))
	}
	if len(addrs) > 0 && len(failed) == len(addrs) {
		return fmt.Errorf("mesh: libp2p host: cannot listen on any address: %w", errors.Join(failed...))
	}
	return nil
}

// listenOrder is the order the swarm listens on a in (Swarm.Listen).
func listenOrder(sw *swarm.Swarm, a ma.Multiaddr) int {
	if l, ok := sw.TransportForListening(a).(swarm.OrderedListener); ok {
		return l.ListenOrder()
	}
	return 0
}

// loadIdentity reads the node's private key, or makes and saves one.
func loadIdentity(path string) (crypto.PrivKey, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		return crypto.UnmarshalPrivateKey(data)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	data, err = crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	return key, nil
}

// Close stops the node: the fetcher, the announcer, the host and the store,
// in that order, and waits for every goroutine the node started. It is
// idempotent; later calls on the node fail with ErrClosed.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		defer unregisterDependencyLogs(n)
		n.boot.mu.Lock() // setBootstrap starts nothing after this
		n.spawnMu.Lock() // nor does spawn
		n.closed.Store(true)
		n.spawnMu.Unlock()
		n.boot.mu.Unlock()
		n.cancel()
		var errs []error
		if n.fetcher != nil {
			errs = append(errs, n.fetcher.Close())
		}
		if n.sumSvc != nil {
			errs = append(errs, n.sumSvc.Close())
		}
		if n.ann != nil {
			errs = append(errs, n.ann.Close())
		}
		if n.host != nil {
			errs = append(errs, n.host.Close())
		}
		n.wg.Wait()
		if n.store != nil {
			errs = append(errs, n.store.Close())
		}
		n.metrics.unregister() // after the host: libp2p's too
		if n.lock != nil {
			errs = append(errs, n.lock.Close())
		}
		if n.cfg.HTTPClient == nil && n.client != nil {
			n.client.CloseIdleConnections()
		}
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("mesh: close: %w", err)
		}
	})
	return n.closeErr
}

// spawn runs fn in a goroutine that Close waits for, and reports true,
// unless the node is closing: then it reports false and fn does not run.
// A check of closed followed by wg.Add raced Close's wg.Wait: the
// goroutine could start after Close had returned.
func (n *Node) spawn(fn func()) bool {
	n.spawnMu.Lock()
	defer n.spawnMu.Unlock()
	if n.closed.Load() {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
	return true
}

// Config returns the configuration in effect, role defaults filled in.
func (n *Node) Config() Config {
	n.cfgMu.Lock()
	c := n.cfg
	n.cfgMu.Unlock()
	c.ListenAddrs = append([]string(nil), c.ListenAddrs...)
	c.Bootstrap = append([]string(nil), c.Bootstrap...)
	return c
}

// ID is the node's peer ID; it survives restarts on the same DataDir.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Addrs returns the node's listen addresses, each ending in /p2p/ID: what
// another node passes as Bootstrap, or a browser dials.
func (n *Node) Addrs() []ma.Multiaddr {
	addrs, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	return addrs
}

// Host is the node's libp2p host, for protocols of your own. Do not close it.
func (n *Node) Host() host.Host { return n.host }

// Store is the node's block store. Do not close it.
func (n *Node) Store() *store.Store { return n.store }

// Fetcher is the node's fetcher, for fetches with a Target of your own.
func (n *Node) Fetcher() *fetch.Fetcher { return n.fetcher }

// Announcer is the node's announcer and provider table.
func (n *Node) Announcer() *announce.Announcer { return n.ann }

// Connect dials a peer given as a multiaddr ending in /p2p/ID.
func (n *Node) Connect(ctx context.Context, addr string) error {
	if n.closed.Load() {
		return ErrClosed
	}
	ai, err := parsePeer(addr)
	if err != nil {
		return fmt.Errorf("mesh: connect %q: %w", addr, err)
	}
	// Close ends the dial too, with an error matching ErrClosed (the
	// swarm's "swarm closed" alone did not).
	ctx, stop := n.untilClose(ctx)
	defer stop()
	if err := n.host.Connect(ctx, ai); err != nil {
		return n.closing(fmt.Errorf("mesh: connect %s: %w", ai.ID, err))
	}
	return nil
}

// untilClose returns a context that ends with ctx or at Close, whichever
// comes first, and the function that releases it.
func (n *Node) untilClose(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, stop := context.WithCancel(ctx)
	unhook := context.AfterFunc(n.ctx, stop)
	return ctx, func() { unhook(); stop() }
}

// WaitPeers waits until the node is connected to at least count peers, or
// ctx ends.
func (n *Node) WaitPeers(ctx context.Context, count int) error {
	if n.closed.Load() {
		return ErrClosed
	}
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return fmt.Errorf("mesh: wait for peers: %w", err)
	}
	defer sub.Close()
	for {
		have := 0
		for _, p := range n.host.Network().Peers() {
			if n.host.Network().Connectedness(p) == network.Connected {
				have++
			}
		}
		if have >= count {
			return nil
		}
		select {
		case <-sub.Out():
		case <-ctx.Done():
			return fmt.Errorf("mesh: wait for %d peers (have %d): %w", count, have, ctx.Err())
		case <-n.ctx.Done():
			return ErrClosed
		}
	}
}

// Open fetches content by CID: from the store, else from peers, else from
// the Gateway if one is configured. The reader streams in file order and
// seeks; close it.
func (n *Node) Open(ctx context.Context, c cid.Cid) (*fetch.Reader, error) {
	if n.closed.Load() {
		return nil, ErrClosed
	}
	r, err := n.fetcher.Open(ctx, fetch.Target{Cid: c, Gateway: n.cfg.Gateway})
	return r, n.closing(err)
}

// closing makes err, from a call that Close ended under it, match
// ErrClosed too (beside the fetcher's or the store's own).
func (n *Node) closing(err error) error {
	if err == nil || !n.closed.Load() || errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrClosed, err)
}

// OpenAsset fetches the asset at path of m: from the store, else from peers
// racing the origin (Config.Origin + "/" + path). It fails with
// ErrNotInManifest for a path m does not list.
func (n *Node) OpenAsset(ctx context.Context, m *manifest.Manifest, path string) (*fetch.Reader, manifest.Asset, error) {
	if n.closed.Load() {
		return nil, manifest.Asset{}, ErrClosed
	}
	a, ok := m.Lookup(path)
	if !ok {
		return nil, manifest.Asset{}, fmt.Errorf("mesh: open %q: %w", path, ErrNotInManifest)
	}
	t, err := n.target(a)
	if err != nil {
		return nil, a, err
	}
	r, err := n.fetcher.Open(ctx, t)
	return r, a, n.closing(err)
}

// ErrNotInManifest reports a path that the manifest does not list.
var ErrNotInManifest = errors.New("mesh: not in the manifest")

// target is where the asset comes from: peers, and the origin at
// Config.Origin + "/" + its path (escaped).
func (n *Node) target(a manifest.Asset) (fetch.Target, error) {
	return fetch.AssetTarget(a, n.cfg.Origin, n.cfg.Gateway)
}

// LoadManifest fetches and checks the manifest at u (an absolute URL, or a
// path relative to Config.Origin such as "manifest.json"), within
// Config.ManifestTimeout (30 s) from the request to the last byte: a hung
// origin fails it with an error matching context.DeadlineExceeded. To
// follow a site's versions, use Follow.
func (n *Node) LoadManifest(ctx context.Context, u string) (*manifest.Manifest, error) {
	m, _, err := n.loadManifest(ctx, u, "")
	return m, n.closing(err)
}

// Pin fetches every asset of m that the store does not hold (peers first,
// then the origin) and pins it, so that it is never evicted: what a seed
// does with its site's manifest. Content already held is not fetched again.
// It fails with store.ErrQuotaExceeded, before fetching anything, when the
// assets not held cannot fit beside the pinned content (unpin what an
// older version had first: Follow does), and when a fetch could not keep
// its blocks. Pinning never removes a pin: see Follow for versions.
// It fails with store.ErrDiskFull (or store.ErrReadOnly) when the store
// could not keep leaves for a full disk.
func (n *Node) Pin(ctx context.Context, m *manifest.Manifest) error {
	if m == nil {
		return errors.New("mesh: pin: nil manifest")
	}
	if n.closed.Load() {
		return ErrClosed // a manifest of no assets too
	}
	_, err := n.pin(ctx, m)
	return err
}

// pinTally is what pinning a manifest fetched: all of it, and from the
// origin.
type pinTally struct{ fetched, origin int64 }

// pin pins every asset of m in turn, for Pin and the follower, once it
// has checked that they fit.
func (n *Node) pin(ctx context.Context, m *manifest.Manifest) (pinTally, error) {
	var tally pinTally
	if err := n.checkFits(m); err != nil {
		return tally, err
	}
	for _, a := range m.Assets {
		if n.closed.Load() {
			return tally, ErrClosed
		}
		got, err := n.pinAsset(ctx, a)
		tally.fetched += got.fetched
		tally.origin += got.origin
		if err != nil {
			return tally, n.closing(fmt.Errorf("mesh: pin %s: %w", a.Path, err))
		}
	}
	return tally, nil
}

// notKeptWhy says why the store did not keep leaves: a full disk, a store
// opened read-only, else the quota.
func notKeptWhy(h store.Health) error {
	switch {
	case h.ReadOnly:
		return store.ErrReadOnly
	case h.DiskFull:
		return store.ErrDiskFull
	}
	return store.ErrQuotaExceeded
}

// checkFits fails with store.ErrQuotaExceeded if the assets of m that the
// store does not hold are more bytes than the quota leaves beside pinned
// content.
func (n *Node) checkFits(m *manifest.Manifest) error {
	u := n.store.Usage()
	if u.Quota < 0 {
		return nil
	}
	var need int64
	seen := make(map[string]bool, len(m.Assets))
	for _, a := range m.Assets {
		k := a.Cid.KeyString()
		if seen[k] || n.store.Holds(a.Cid) {
			continue
		}
		seen[k] = true
		need += a.Size
		for _, b := range a.Nodes {
			need += int64(len(b.RawData()))
		}
	}
	if need > u.Quota-u.Pinned {
		return fmt.Errorf("mesh: pin: %d bytes to fetch, %d of the quota %d free beside pinned content: %w",
			need, u.Quota-u.Pinned, u.Quota, store.ErrQuotaExceeded)
	}
	return nil
}

// pinAsset fetches one asset if it is not held, and pins it. It returns
// what it fetched. The asset's blocks
// are held from the start (store.Txn.Expect): other fetches evicting to
// make room cannot take the leaves it fetched before they are pinned.
func (n *Node) pinAsset(ctx context.Context, a manifest.Asset) (got pinTally, err error) {
	txn := n.store.Begin()
	defer txn.Discard()
	if err := txn.Expect(leafCids(ctx, a)...); err != nil {
		return got, err
	}
	if a.Size == 0 {
		// An empty file is one empty raw block: nothing to fetch. The
		// store hashes it, so a manifest whose CID is not that of no
		// bytes fails here.
		b, err := blocks.NewBlockWithCid(nil, a.Cid)
		if err != nil {
			return got, err
		}
		if err := txn.Put(ctx, b); err != nil {
			return got, err
		}
	}
	if !n.store.Holds(a.Cid) {
		if got, err = n.fetchToPin(ctx, a); err != nil {
			return got, err
		}
	}
	// Every leaf is held; the inner nodes come from the manifest (already
	// checked against their CIDs), so the content can be named and pinned
	// now, whether or not the fetch did it first.
	for _, b := range a.Nodes {
		if err := txn.Put(ctx, b); err != nil {
			return got, err
		}
	}
	return got, txn.Commit(ctx, a.Cid, true)
}

// fetchToPin reads asset a through a fetch, for pinAsset.
func (n *Node) fetchToPin(ctx context.Context, a manifest.Asset) (got pinTally, err error) {
	t, err := n.target(a)
	if err != nil {
		return got, err
	}
	r, err := n.fetcher.Open(ctx, t)
	if err != nil {
		return got, err
	}
	_, err = io.Copy(io.Discard, r)
	st := r.Stats()
	r.Close()
	got = pinTally{fetched: st.PeerBytes + st.OriginBytes, origin: st.OriginBytes}
	if err != nil {
		return got, err
	}
	if st.NotKept > 0 {
		return got, fmt.Errorf("%d leaves not kept: %w", st.NotKept, notKeptWhy(n.store.Health()))
	}
	return got, nil
}

// leafCids lists the leaves of asset a: the root of a one-leaf file, else
// those its inner nodes name (none if they do not say).
func leafCids(ctx context.Context, a manifest.Asset) []cid.Cid {
	if len(a.Nodes) == 0 {
		return []cid.Cid{a.Cid}
	}
	leaves, err := store.Leaves(ctx, dagfile.NewNodes(a.Nodes), a.Cid, a.Size)
	if err != nil {
		return nil // the fetch finds out and says so
	}
	cs := make([]cid.Cid, len(leaves))
	for i, l := range leaves {
		cs[i] = l.Cid
	}
	return cs
}

// Stats is a snapshot of a node's figures.
type Stats struct {
	// Fetch is the accounting of every fetch since New: bytes by source,
	// by peer, served to others.
	Fetch fetch.Totals
	// Offload is the share of fetched network bytes that came from peers.
	Offload float64
	// Store is what the store holds.
	Store store.Usage
	// Announce counts announcements sent and received.
	Announce announce.Stats
	// Peers is the number of connected peers.
	Peers int
	// Seeds is how many of them are bootstrap peers.
	Seeds int
}

// Stats returns the node's figures now. Stats marshals to JSON with peer
// IDs as strings.
func (n *Node) Stats() Stats {
	t := n.fetcher.Stats()
	seeds, others := n.peerCounts()
	return Stats{
		Fetch:    t,
		Offload:  t.Offload(),
		Store:    n.store.Usage(),
		Announce: n.ann.Stats(),
		Peers:    seeds + others,
		Seeds:    seeds,
	}
}

// The provider table is the fetches' crowd, holders included: a stripe
// leaves the leaves ahead of its reader to the mesh once one is known.
var _ interface {
	fetch.Crowd
	fetch.Holders
} = (*announce.Table)(nil)
