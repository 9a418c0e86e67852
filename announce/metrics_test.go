package announce

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

func TestMetrics(t *testing.T) {
	n := newTestNet(t)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a := n.node(nodeOpts{cfg: func(c *Config) { c.PrometheusRegisterer = regA }})
	b := n.node(nodeOpts{noStore: true, cfg: func(c *Config) { c.PrometheusRegisterer = regB }})
	n.connect(a, b)
	root := importSeed(t, a, 60, 1000)
	awaitProvider(t, b, root, a.h.ID())

	for _, tc := range []struct {
		reg    *prometheus.Registry
		name   string
		labels map[string]string
		want   func(float64) bool
	}{
		{regB, "meshcdn_announce_table_entries", nil, func(v float64) bool { return v == 1 }},
		{regB, "meshcdn_announce_received_messages_total", nil, func(v float64) bool { return v >= 1 }},
		{regB, "meshcdn_announce_refused_messages_total", map[string]string{"reason": "unsigned"}, func(v float64) bool { return v == 0 }},
		{regB, "meshcdn_announce_refused_messages_total", map[string]string{"reason": "rate_limited"}, func(v float64) bool { return v == 0 }},
		{regA, "meshcdn_announce_published_messages_total", nil, func(v float64) bool { return v >= 1 }},
	} {
		if v, ok := testutil.MetricValue(t, tc.reg, tc.name, tc.labels); !ok || !tc.want(v) {
			t.Fatalf("%s%v = %v (found %v)", tc.name, tc.labels, v, ok)
		}
	}

	// One Announcer per registerer; Close frees it.
	if _, err := New(Config{Name: "test", Host: n.host(), PrometheusRegisterer: regA, DisableDHT: true, MDNS: Off}); err == nil {
		t.Fatal("a second Announcer on the same registerer: nil error")
	}
	a.a.Close()
	if mfs, _ := regA.Gather(); len(mfs) != 0 {
		t.Fatalf("%d metric families left after Close", len(mfs))
	}
	c := n.node(nodeOpts{cfg: func(c *Config) { c.PrometheusRegisterer = regA }})
	c.a.Close()
}
