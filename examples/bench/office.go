package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// OfficeResult is the office scenario's part of the report.
type OfficeResult struct {
	Network string        `json:"network"`
	Samples int           `json:"samples"`
	Assets  []OfficeAsset `json:"assets"`
	Skipped string        `json:"skipped,omitempty"`
}

// OfficeAsset is the TTFB of one asset from a peer on the LAN and from the
// distant origin (medians of Samples fresh app nodes each).
type OfficeAsset struct {
	Path          string    `json:"path"`
	Bytes         int64     `json:"bytes"`
	PeerTTFBp50   float64   `json:"peer_ttfb_p50_ms"`
	OriginTTFBp50 float64   `json:"origin_ttfb_p50_ms"`
	Ratio         float64   `json:"peer_over_origin"`
	PeerTTFB      []float64 `json:"peer_ttfb_ms"`
	OriginTTFB    []float64 `json:"origin_ttfb_ms"`
	PeerSources   []string  `json:"peer_sources"`
}

const officeNetwork = "loopback, no network namespaces: the origin's 40 ms round trip added in user space before each response's first byte " +
	"and its 100 Mbit/s uplink shaped (meshtest.Origin); the LAN's 0.5 ms RTT not added (loopback: about 0.05 ms)"

// runOffice puts an app that holds a 100 KiB and a 20 MiB asset beside
// fresh apps that fetch them (peer hits), and fresh apps with no peer that
// fetch them from an origin 40 ms away behind 100 Mbit/s (origin fetches),
// all with the app role's defaults.
func runOffice(ctx context.Context, o options, p *progress) (*OfficeResult, error) {
	res := &OfficeResult{Network: officeNetwork, Samples: o.officeSamples}
	site := meshtest.GenerateSite(o.seed, map[string]int64{"small.bin": 100 << 10, "large.bin": int64(o.officeLargeMiB) * mib})
	org, err := meshtest.NewOrigin(meshtest.OriginConfig{Site: site, BytesPerSecond: 100e6 / 8, Latency: 40 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer org.Close()
	m := org.Manifest()
	holder, err := mesh.New(ctx, meshtest.LocalConfig(mesh.Config{Name: "bench-office", Origin: org.URL()}))
	if err != nil {
		return nil, err
	}
	defer holder.Close()
	if err := holder.Pin(ctx, m); err != nil {
		return nil, err
	}
	for _, path := range []string{"small.bin", "large.bin"} {
		a, _ := m.Lookup(path)
		oa := OfficeAsset{Path: path, Bytes: a.Size}
		for range o.officeSamples {
			tt, src, err := officeFetch(ctx, m, a, org.URL(), holder.Addrs()[0].String())
			if err != nil {
				return res, fmt.Errorf("peer hit of %s: %w", path, err)
			}
			oa.PeerTTFB, oa.PeerSources = append(oa.PeerTTFB, ms(tt)), append(oa.PeerSources, src)
			if tt, _, err = officeFetch(ctx, m, a, org.URL(), ""); err != nil {
				return res, fmt.Errorf("origin fetch of %s: %w", path, err)
			}
			oa.OriginTTFB = append(oa.OriginTTFB, ms(tt))
		}
		oa.PeerTTFBp50, oa.OriginTTFBp50 = medianMs(oa.PeerTTFB), medianMs(oa.OriginTTFB)
		oa.Ratio = oa.PeerTTFBp50 / oa.OriginTTFBp50
		p.step("office: %s (%d KiB): TTFB peer hit p50 %.1f ms, origin p50 %.1f ms, ratio %.2f", path, a.Size>>10, oa.PeerTTFBp50, oa.OriginTTFBp50, oa.Ratio)
		res.Assets = append(res.Assets, oa)
	}
	return res, nil
}

// officeFetch starts a fresh app (bootstrapped to boot, if any, and waiting
// to hear that it holds a), fetches a and returns its TTFB and where its
// bytes came from.
func officeFetch(ctx context.Context, m *manifest.Manifest, a manifest.Asset, origin, boot string) (time.Duration, string, error) {
	cfg := mesh.Config{Name: "bench-office", Origin: origin}
	if boot != "" {
		cfg.Bootstrap = []string{boot}
	}
	n, err := mesh.New(ctx, meshtest.LocalConfig(cfg))
	if err != nil {
		return 0, "", err
	}
	defer n.Close()
	if boot != "" {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := meshtest.WaitProvider(wctx, n, a.Cid); err != nil {
			return 0, "", err
		}
	}
	r, _, err := n.OpenAsset(ctx, m, a.Path)
	if err != nil {
		return 0, "", err
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		return 0, "", err
	}
	st := r.Stats()
	f := meshtest.FetchReport{PeerBytes: st.PeerBytes, OriginBytes: st.OriginBytes, LocalBytes: st.LocalBytes}
	return st.TTFB, f.Source(), nil
}

func medianMs(v []float64) float64 {
	ds := make([]time.Duration, len(v))
	for i, x := range v {
		ds[i] = time.Duration(x * float64(time.Millisecond))
	}
	return ms(meshtest.Percentile(ds, 0.5))
}
