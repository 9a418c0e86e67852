package announce

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
		reg   *prometheus.Registry
		name  string
		label string
		want  func(float64) bool
	}{
		{regB, "meshcdn_announce_table_entries", "", func(v float64) bool { return v == 1 }},
		{regB, "meshcdn_announce_received_messages_total", "", func(v float64) bool { return v >= 1 }},
		{regB, "meshcdn_announce_refused_messages_total", "unsigned", func(v float64) bool { return v == 0 }},
		{regB, "meshcdn_announce_refused_messages_total", "rate_limited", func(v float64) bool { return v == 0 }},
		{regA, "meshcdn_announce_published_messages_total", "", func(v float64) bool { return v >= 1 }},
	} {
		if v, ok := metricValue(t, tc.reg, tc.name, tc.label); !ok || !tc.want(v) {
			t.Fatalf("%s{%s} = %v (found %v)", tc.name, tc.label, v, ok)
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

// metricValue returns the value of the series of name whose only label
// value is label ("" for a series without labels).
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			lv := ""
			if len(m.GetLabel()) > 0 {
				lv = m.GetLabel()[0].GetValue()
			}
			if lv != label {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}
