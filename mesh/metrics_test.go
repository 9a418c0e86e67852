package mesh_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/mesh"
)

// TestPrometheusOnTheGivenRegistry: metrics land on the registry passed in,
// nothing on the global one, and the offload figure follows real fetches.
func TestPrometheusOnTheGivenRegistry(t *testing.T) {
	s := newSite(t, map[string]int64{"x.bin": 1<<20 + 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	globalBefore, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	n := newNode(t, mesh.Config{Origin: s.URL(), PrometheusRegisterer: reg})
	m, err := n.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := n.OpenAsset(ctx, m, "x.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var originBytes float64
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
		if mf.GetName() == "meshcdn_fetch_bytes_total" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "source" && l.GetValue() == "origin" {
						originBytes = m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	for _, name := range []string{"meshcdn_fetch_bytes_total", "meshcdn_fetch_offload_ratio"} {
		if !found[name] {
			t.Errorf("metric %s not on the given registry", name)
		}
	}
	if originBytes != 1<<20+1 {
		t.Errorf("meshcdn_fetch_bytes_total{source=origin} = %v, want %d", originBytes, 1<<20+1)
	}
	globalAfter, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(globalAfter) != len(globalBefore) {
		t.Errorf("the global registry went from %d to %d metric families", len(globalBefore), len(globalAfter))
	}
}
