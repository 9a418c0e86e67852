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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/announce"
	"github.com/meshcdn/meshcdn/fetch"
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
	cfg     Config
	log     *slog.Logger
	host    host.Host
	store   *store.Store
	ann     *announce.Announcer
	fetcher *fetch.Fetcher
	client  *http.Client
	served  atomic.Pointer[fetch.Fetcher] // the fetcher, for evidence

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// New starts a node. ctx bounds the start only (opening the store, starting
// the host); the node runs until Close. Bootstrap peers are dialled in the
// background: WaitPeers waits for them.
func New(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.ListenAddrs = append([]string(nil), cfg.ListenAddrs...)
	cfg.Bootstrap = append([]string(nil), cfg.Bootstrap...)
	bootstrap, err := parsePeers(cfg.Bootstrap)
	if err != nil {
		return nil, fmt.Errorf("%w: Bootstrap: %v", ErrConfig, err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, client: cfg.HTTPClient}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.log = n.log.With("pkg", "mesh")
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.client == nil {
		n.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}

	var key crypto.PrivKey
	storeCfg := store.Config{InMemory: cfg.InMemory, Quota: cfg.Quota, Logger: cfg.Logger}
	if cfg.InMemory {
		key, _, err = crypto.GenerateEd25519Key(rand.Reader)
	} else {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("mesh: data dir: %w", err)
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

	opts, err := hostOptions(cfg, key)
	if err != nil {
		return nil, err
	}
	if n.host, err = libp2p.New(opts...); err != nil {
		return nil, fmt.Errorf("mesh: libp2p host: %w", err)
	}

	mode := dht.ModeAuto
	if cfg.Role == RoleSeed {
		mode = dht.ModeServer
	}
	n.ann, err = announce.New(announce.Config{
		Name:       cfg.Name,
		Host:       n.host,
		Holdings:   n.store,
		MDNS:       cfg.MDNS,
		DisableDHT: cfg.DisableDHT,
		DHTMode:    mode,
		Logger:     cfg.Logger,
		Table:      announce.TableConfig{Evidence: n.evidence},

		PrometheusRegisterer: cfg.PrometheusRegisterer,
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	var adv fetch.Advertiser
	if cfg.AnnounceFetches == On {
		adv = n.ann
	}
	n.fetcher, err = fetch.New(fetch.Config{
		Advertiser:           adv,
		Host:                 n.host,
		Store:                n.store,
		Providers:            n.ann.Table(),
		HTTPClient:           n.client,
		PeerTimeout:          cfg.PeerTimeout,
		ServeBytesPerSecond:  cfg.ServeBytesPerSecond,
		ServeConcurrency:     cfg.ServeConcurrency,
		Logger:               cfg.Logger,
		PrometheusRegisterer: cfg.PrometheusRegisterer,
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	n.served.Store(n.fetcher)
	for _, ai := range bootstrap {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.dialBootstrap(ai)
		}()
	}
	n.log.Info("node started", "peer", n.host.ID(), "role", string(cfg.Role), "addrs", len(n.host.Addrs()))
	return n, nil
}

// dialBootstrap connects to a bootstrap peer, retrying with backoff until it
// works or the node closes.
func (n *Node) dialBootstrap(ai peer.AddrInfo) {
	wait := 250 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(n.ctx, 15*time.Second)
		err := n.host.Connect(ctx, ai)
		cancel()
		if err == nil {
			n.host.ConnManager().Protect(ai.ID, "meshcdn-bootstrap")
			return
		}
		n.log.Warn("bootstrap dial failed", "peer", ai.ID, "err", err)
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

func hostOptions(cfg Config, key crypto.PrivKey) ([]libp2p.Option, error) {
	lopts, err := limitOptions(cfg)
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
	if cfg.PrometheusRegisterer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.PrometheusRegisterer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if cfg.Role == RoleApp {
		opts = append(opts, libp2p.EnableHolePunching())
	}
	if cfg.NATPortMap == On {
		opts = append(opts, libp2p.NATPortMap())
	}
	if cfg.RelayService == On {
		opts = append(opts, libp2p.EnableRelayService(), libp2p.ForceReachabilityPublic())
	}
	return append(opts, cfg.Libp2pOptions...), nil
}

func parsePeers(addrs []string) ([]peer.AddrInfo, error) {
	var mas []ma.Multiaddr
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, err
		}
		mas = append(mas, m)
	}
	return peer.AddrInfosFromP2pAddrs(mas...)
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
		n.closed.Store(true)
		n.cancel()
		var errs []error
		if n.fetcher != nil {
			errs = append(errs, n.fetcher.Close())
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
		if n.cfg.HTTPClient == nil && n.client != nil {
			n.client.CloseIdleConnections()
		}
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("mesh: close: %w", err)
		}
	})
	return n.closeErr
}

// Config returns the configuration in effect, role defaults filled in.
func (n *Node) Config() Config {
	c := n.cfg
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
	ais, err := parsePeers([]string{addr})
	if err != nil {
		return fmt.Errorf("mesh: connect %q: %w", addr, err)
	}
	if err := n.host.Connect(ctx, ais[0]); err != nil {
		return fmt.Errorf("mesh: connect %s: %w", ais[0].ID, err)
	}
	return nil
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
	return n.fetcher.Open(ctx, fetch.Target{Cid: c, Gateway: n.cfg.Gateway})
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
	return r, a, err
}

// ErrNotInManifest reports a path that the manifest does not list.
var ErrNotInManifest = errors.New("mesh: not in the manifest")

// target is where the asset comes from: peers, and the origin at
// Config.Origin + "/" + its path (escaped).
func (n *Node) target(a manifest.Asset) (fetch.Target, error) {
	return fetch.AssetTarget(a, n.cfg.Origin, n.cfg.Gateway)
}

// maxManifestFetch bounds how long LoadManifest waits for the origin.
const maxManifestFetch = 30 * time.Second

// LoadManifest fetches and checks the manifest at u (an absolute URL, or a
// path relative to Config.Origin such as "manifest.json").
func (n *Node) LoadManifest(ctx context.Context, u string) (*manifest.Manifest, error) {
	if n.closed.Load() {
		return nil, ErrClosed
	}
	if !strings.Contains(u, "://") {
		if n.cfg.Origin == "" {
			return nil, fmt.Errorf("mesh: manifest %q: relative URL and no Origin", u)
		}
		u = strings.TrimSuffix(n.cfg.Origin, "/") + "/" + strings.TrimPrefix(u, "/")
	}
	ctx, cancel := context.WithTimeout(ctx, maxManifestFetch)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("mesh: manifest: %w", err)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mesh: manifest: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mesh: manifest %s: HTTP %s", u, resp.Status)
	}
	m, err := manifest.Read(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("mesh: manifest %s: %w", u, err)
	}
	return m, nil
}

// Pin fetches every asset of m that the store does not hold (peers first,
// then the origin) and pins it, so that it is never evicted: what a seed
// does with its site's manifest. Content already held is not fetched again.
// It fails with store.ErrQuotaExceeded when the assets cannot all fit.
func (n *Node) Pin(ctx context.Context, m *manifest.Manifest) error {
	for _, a := range m.Assets {
		if n.closed.Load() {
			return ErrClosed
		}
		if !n.store.Holds(a.Cid) {
			t, err := n.target(a)
			if err != nil {
				return fmt.Errorf("mesh: pin %s: %w", a.Path, err)
			}
			r, err := n.fetcher.Open(ctx, t)
			if err != nil {
				return fmt.Errorf("mesh: pin %s: %w", a.Path, err)
			}
			_, err = io.Copy(io.Discard, r)
			st := r.Stats()
			r.Close()
			if err != nil {
				return fmt.Errorf("mesh: pin %s: %w", a.Path, err)
			}
			if st.NotKept > 0 {
				return fmt.Errorf("mesh: pin %s: %d leaves not kept: %w", a.Path, st.NotKept, store.ErrQuotaExceeded)
			}
		}
		// Every leaf is held; the inner nodes come from the manifest
		// (already checked against their CIDs), so the content can be
		// named and pinned now, whether or not the fetch did it first.
		for _, b := range a.Nodes {
			if err := n.store.Put(ctx, b); err != nil {
				return fmt.Errorf("mesh: pin %s: %w", a.Path, err)
			}
		}
		if err := n.store.Pin(ctx, a.Cid); err != nil {
			return fmt.Errorf("mesh: pin %s: %w", a.Path, err)
		}
	}
	return nil
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
}

// Stats returns the node's figures now.
func (n *Node) Stats() Stats {
	t := n.fetcher.Stats()
	return Stats{
		Fetch:    t,
		Offload:  t.Offload(),
		Store:    n.store.Usage(),
		Announce: n.ann.Stats(),
		Peers:    len(n.host.Network().Peers()),
	}
}
