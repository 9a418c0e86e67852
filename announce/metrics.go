package announce

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics registers the Announcer's metrics, read from its Stats and
// its table's, with reg. Label values form a small fixed set: never CIDs or
// peer IDs. It returns a function that unregisters them.
func registerMetrics(reg prometheus.Registerer, a *Announcer) (func(), error) {
	const ns, sub = "meshcdn", "announce"
	counter := func(name, help string, labels prometheus.Labels, f func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(f(a.Stats())) })
	}
	gauge := func(name, help string, f func(TableStats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help},
			func() float64 { return float64(f(a.table.Stats())) })
	}
	const refusedHelp = "Messages from others refused by the announce validator, by reason."
	const repairHelp = "Peers whose pubsub state was lost while connected, repaired: their pubsub streams reset, or they were redialled."
	cs := []prometheus.Collector{
		counter("published_messages_total", "Announce messages published (HAVE, DROP, FETCH).", nil, func(s Stats) uint64 { return s.Published }),
		counter("published_bytes_total", "Payload bytes of the messages published.", nil, func(s Stats) uint64 { return s.PublishedBytes }),
		counter("summaries_total", "Summaries sent (periodic and on peers joining).", nil, func(s Stats) uint64 { return s.Summaries }),
		counter("received_messages_total", "Messages from others accepted.", nil, func(s Stats) uint64 { return s.Received }),
		counter("refused_messages_total", refusedHelp, prometheus.Labels{"reason": "unsigned"}, func(s Stats) uint64 { return s.Unsigned }),
		counter("refused_messages_total", refusedHelp, prometheus.Labels{"reason": "oversized"}, func(s Stats) uint64 { return s.Oversized }),
		counter("refused_messages_total", refusedHelp, prometheus.Labels{"reason": "malformed"}, func(s Stats) uint64 { return s.Malformed }),
		counter("refused_messages_total", refusedHelp, prometheus.Labels{"reason": "unknown_version"}, func(s Stats) uint64 { return s.UnknownVersion }),
		counter("refused_messages_total", refusedHelp, prometheus.Labels{"reason": "rate_limited"}, func(s Stats) uint64 { return s.RateLimited }),
		counter("refused_messages_total", refusedHelp, prometheus.Labels{"reason": "replayed"}, func(s Stats) uint64 { return s.Replayed }),
		counter("provides_total", "DHT provides, by result.", prometheus.Labels{"result": "ok"}, func(s Stats) uint64 { return s.Provided }),
		counter("provides_total", "DHT provides, by result.", prometheus.Labels{"result": "error"}, func(s Stats) uint64 { return s.ProvideErrors }),
		counter("pubsub_repairs_total", repairHelp, prometheus.Labels{"repair": "reset"}, func(s Stats) uint64 { return s.Resubscribes }),
		counter("pubsub_repairs_total", repairHelp, prometheus.Labels{"repair": "redial"}, func(s Stats) uint64 { return s.Redials }),
		gauge("table_entries", "(root, peer) pairs in the provider table.", func(s TableStats) int { return s.Entries }),
		gauge("table_roots", "Distinct roots in the provider table.", func(s TableStats) int { return s.Roots }),
		gauge("table_peers", "Distinct peers in the provider table.", func(s TableStats) int { return s.Peers }),
	}
	unregister := func(done []prometheus.Collector) {
		for _, c := range done {
			reg.Unregister(c)
		}
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			unregister(cs[:i])
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("register metrics (one Announcer per registerer): %w", err)
			}
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return func() { unregister(cs) }, nil
}
