package mesh

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/fetch"
)

// A node's Prometheus metrics.
//
// Every collector of the node (ours, the fetcher's, the announcer's and
// libp2p's own) is registered through one registerer: Config's, wrapped so
// that every metric carries Config.PrometheusLabels (by default
// node="<peer ID>"), and recording what was registered so that Close
// unregisters all of it. Two nodes on one registry therefore work when
// their labels differ. go-libp2p keeps its metrics (swarm, identify,
// resource manager, ...) in package-level collectors: on a registry shared
// by several nodes of one process, each node's copy of those series shows
// the whole process, not the node.

// metrics is the node's registration. A nil *metrics registers nothing.
type metrics struct {
	rec    *recordingRegisterer
	labels prometheus.Labels // on every metric
}

func newMetrics(cfg Config, key crypto.PrivKey) (*metrics, error) {
	if cfg.PrometheusRegisterer == nil {
		return nil, nil
	}
	labels := cfg.PrometheusLabels
	if len(labels) == 0 {
		id, err := peer.IDFromPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("mesh: metrics: %w", err)
		}
		labels = prometheus.Labels{"node": id.String()}
	}
	return &metrics{labels: labels, rec: &recordingRegisterer{reg: prometheus.WrapRegistererWith(labels, cfg.PrometheusRegisterer)}}, nil
}

// registerer is what the node's parts register with; nil without a
// Config.PrometheusRegisterer.
func (m *metrics) registerer() prometheus.Registerer {
	if m == nil {
		return nil
	}
	return m.rec
}

// unregister removes every collector registered through the node.
func (m *metrics) unregister() {
	if m != nil {
		m.rec.unregisterAll()
	}
}

// registerNode registers the node's own gauges: store usage and quota,
// connected peers by role.
func (m *metrics) registerNode(n *Node) error {
	if m == nil {
		return nil
	}
	const ns = "meshcdn"
	gauge := func(sub, name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help, ConstLabels: labels}, f)
	}
	const peersHelp = "Connected peers, by role: seed (a bootstrap peer) or other."
	cs := []prometheus.Collector{
		gauge("store", "used_bytes", "Bytes of block data the store holds.", nil, func() float64 { return float64(n.store.Usage().Used) }),
		gauge("store", "quota_bytes", "The store's quota in bytes; -1 means none.", nil, func() float64 {
			return float64(max(n.store.Usage().Quota, -1))
		}),
		gauge("store", "pinned_bytes", "Bytes of blocks that belong to pinned content.", nil, func() float64 { return float64(n.store.Usage().Pinned) }),
		gauge("store", "roots", "Content roots the store holds.", nil, func() float64 { return float64(n.store.Usage().Roots) }),
		gauge("", "peers", peersHelp, prometheus.Labels{"role": "seed"}, func() float64 { s, _ := n.peerCounts(); return float64(s) }),
		gauge("", "peers", peersHelp, prometheus.Labels{"role": "other"}, func() float64 { _, o := n.peerCounts(); return float64(o) }),
	}
	for _, c := range cs {
		if err := m.rec.Register(c); err != nil {
			return fmt.Errorf("mesh: register metrics: %w", err)
		}
	}
	return nil
}

// peerCounts returns the connected bootstrap peers and the other connected
// peers.
func (n *Node) peerCounts() (seeds, others int) {
	nw := n.host.Network()
	for _, p := range nw.Peers() {
		if nw.Connectedness(p) != network.Connected {
			continue
		}
		if n.isBootstrap(p) {
			seeds++
		} else {
			others++
		}
	}
	return seeds, others
}

// recordingRegisterer registers with reg and remembers what it registered,
// so that all of it can be unregistered at once. libp2p's collectors are
// registered through it too (libp2p never unregisters them itself).
type recordingRegisterer struct {
	reg prometheus.Registerer
	mu  sync.Mutex
	cs  []prometheus.Collector
}

// Register implements prometheus.Registerer.
func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.cs = append(r.cs, c)
	r.mu.Unlock()
	return nil
}

// MustRegister implements prometheus.Registerer: it panics on an error, as
// the interface requires (only libp2p's internals call it).
func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister implements prometheus.Registerer. The record keeps c:
// unregistering it again at Close does nothing.
func (r *recordingRegisterer) Unregister(c prometheus.Collector) bool {
	return r.reg.Unregister(c)
}

func (r *recordingRegisterer) unregisterAll() {
	r.mu.Lock()
	cs := r.cs
	r.cs = nil
	r.mu.Unlock()
	for _, c := range cs {
		r.reg.Unregister(c)
	}
}

// MarshalJSON writes the Stats with peer IDs as strings (the base58 form
// of peer.ID.String) in Fetch.Peers.
func (s Stats) MarshalJSON() ([]byte, error) {
	type fetchJSON struct {
		fetch.Totals
		Peers map[string]int64
	}
	type plain Stats // without this method
	out := struct {
		plain
		Fetch fetchJSON
	}{plain: plain(s), Fetch: fetchJSON{Totals: s.Fetch}}
	if s.Fetch.Peers != nil {
		out.Fetch.Peers = make(map[string]int64, len(s.Fetch.Peers))
		for p, b := range s.Fetch.Peers {
			out.Fetch.Peers[p.String()] = b
		}
	}
	return json.Marshal(out)
}
