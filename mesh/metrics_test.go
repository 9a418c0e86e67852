package mesh_test

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/internal/testutil"
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

// labelValues returns, per metric family name, the values of label name
// found on reg.
func labelValues(t *testing.T, reg *prometheus.Registry, label string) map[string]map[string]bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather = %v", err)
	}
	out := map[string]map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[mf.GetName()][l.GetValue()] = true
				}
			}
		}
	}
	return out
}

// TestTwoNodesOneRegistry: two nodes register on one registry (each
// metric carries its node label), Close unregisters everything of the node
// closed, libp2p's collectors included, and the store and peer gauges
// follow the node.
func TestTwoNodesOneRegistry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, DisableDHT: true, Quota: 5 << 20, PrometheusRegisterer: reg})
	app := newNode(t, mesh.Config{DisableDHT: true, PrometheusRegisterer: reg, PrometheusLabels: prometheus.Labels{"node": "app"},
		Bootstrap: []string{seed.Addrs()[0].String()}})
	if err := app.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	got := labelValues(t, reg, "node")
	for _, name := range []string{"meshcdn_store_used_bytes", "meshcdn_store_quota_bytes", "meshcdn_peers", "meshcdn_fetch_offload_ratio", "meshcdn_announce_table_entries"} {
		if !got[name][seed.ID().String()] || !got[name]["app"] {
			t.Errorf("%s has node labels %v, want the seed's peer ID and \"app\"", name, got[name])
		}
	}
	libp2pFamilies := 0
	for name := range got {
		if strings.HasPrefix(name, "libp2p_") {
			libp2pFamilies++
		}
	}
	if libp2pFamilies == 0 {
		t.Error("no libp2p metrics on the registry")
	}
	if v := gaugeValue(t, reg, "meshcdn_store_quota_bytes", map[string]string{"node": seed.ID().String()}); v != 5<<20 {
		t.Errorf("seed's meshcdn_store_quota_bytes = %v, want %d", v, 5<<20)
	}
	if v := gaugeValue(t, reg, "meshcdn_peers", map[string]string{"node": "app", "role": "seed"}); v != 1 {
		t.Errorf("app's meshcdn_peers{role=seed} = %v, want 1", v)
	}
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	for name, nodes := range labelValues(t, reg, "node") {
		if nodes[seed.ID().String()] {
			t.Errorf("%s still has the closed seed's series", name)
		}
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		names := []string{}
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		t.Errorf("after both nodes closed the registry still holds %d families (%v), %v", len(mfs), names, err)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := testutil.MetricValue(t, reg, name, labels)
	if !ok {
		t.Fatalf("no %s%v on the registry", name, labels)
	}
	return v
}

// TestStatsJSON: peer IDs in Stats' JSON are their string form.
func TestStatsJSON(t *testing.T) {
	s := newSite(t, map[string]int64{"a.bin": 1<<20 + 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed, m := pinnedSeed(ctx, t, s, "stats")
	app := newNode(t, mesh.Config{Name: "stats", Origin: s.URL(), Bootstrap: []string{seed.Addrs()[0].String()}, PeerTimeout: 5 * time.Second, DisableDHT: true})
	if err := app.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	fetchAll(ctx, t, app, m, "a.bin", s.Site()["a.bin"])
	b, err := json.Marshal(app.Stats())
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Fetch struct {
			PeerBytes int64
			Peers     map[string]int64
		}
		Peers, Seeds int
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Fetch.Peers[seed.ID().String()]; got != 1<<20+3 || back.Fetch.PeerBytes != got || back.Seeds != 1 {
		t.Errorf("Stats JSON = %s; want Fetch.Peers[%q] = %d and Seeds 1", b, seed.ID(), 1<<20+3)
	}
}
