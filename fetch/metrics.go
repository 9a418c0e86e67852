package fetch

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Prometheus metrics of one Fetcher. Label values come from
// a small fixed set (source, result); never CIDs or peer IDs.
type metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector

	bytes     *prometheus.CounterVec
	dupBytes  *prometheus.CounterVec
	fetches   *prometheus.CounterVec
	ttfb      prometheus.Histogram
	ttlb      prometheus.Histogram
	badBlocks prometheus.Counter
	penalised prometheus.Counter
	// originSent counts what origins sent (Stats.OriginSentBytes).
	originSent prometheus.Counter
	// moved counts want-blocks moved from busy peers (Totals.MovedWants).
	moved prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, f *Fetcher) (*metrics, error) {
	const ns, sub = "meshcdn", "fetch"
	m := &metrics{reg: reg}
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "bytes_total", Help: "Bytes delivered to fetches, by source (local, peer, origin): the first verified copy of each block; a block two fetches took from one origin request counts once as origin."},
		[]string{"source"})
	m.dupBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "duplicate_bytes_total", Help: "Verified bytes that arrived after another source had won, by source."},
		[]string{"source"})
	m.fetches = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "fetches_total", Help: "Fetches ended, by result (complete, failed, abandoned)."},
		[]string{"result"})
	// Every series from the start, at 0: a query subtracting one from
	// another (origin_sent_bytes_total minus bytes_total{source="origin"})
	// had nothing to subtract before a first origin block.
	for _, src := range []Source{SourceLocal, SourcePeer, SourceOrigin} {
		m.bytes.WithLabelValues(string(src))
		m.dupBytes.WithLabelValues(string(src))
	}
	for _, r := range []string{"complete", "failed", "abandoned"} {
		m.fetches.WithLabelValues(r)
	}
	buckets := prometheus.ExponentialBuckets(0.001, 2, 16)
	m.ttfb = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
		Name: "ttfb_seconds", Help: "Time from Open to the first byte handed to the reader.", Buckets: buckets})
	m.ttlb = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
		Name: "ttlb_seconds", Help: "Time from Open to the last block fetched.", Buckets: buckets})
	m.badBlocks = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "bad_blocks_total", Help: "Blocks that failed verification."})
	m.penalised = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "penalised_peers_total", Help: "Peers penalised for sending bad blocks."})
	m.originSent = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "origin_sent_bytes_total", Help: "Bytes origins sent for fetches, kept or not (cut hedges, lost races, skipped bytes, an estimate of bytes in flight when a response was cut); minus bytes_total{source=\"origin\"} it is what was wasted."})
	m.moved = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "moved_wants_total", Help: "Want-blocks moved from a peer that sat on them for 500 ms to another that said HAVE and had fewer of this node's wants."})
	served := prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "served_bytes_total", Help: "Block bytes served to other peers through bitswap."},
		func() float64 { return float64(f.served.Load()) })
	offload := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
		Name: "offload_ratio", Help: "Share of fetched network bytes that came from peers since start."},
		func() float64 { return f.Stats().Offload() })
	m.collectors = []prometheus.Collector{m.bytes, m.dupBytes, m.fetches, m.ttfb, m.ttlb, m.badBlocks, m.penalised, m.originSent, m.moved, served, offload}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("fetch: register metrics (one Fetcher per registerer): %w", err)
			}
			return nil, fmt.Errorf("fetch: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
