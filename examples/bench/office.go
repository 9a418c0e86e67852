package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	ma "github.com/multiformats/go-multiaddr"

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

const (
	officeLoopback = "loopback, no network namespaces: the origin's 40 ms round trip added in user space before each response's first byte " +
		"and its 100 Mbit/s uplink shaped (meshtest.Origin); the LAN's 0.5 ms RTT not added (loopback: about 0.05 ms)"
	officeNetns = "network namespaces: the fresh apps in a namespace of their own, reaching the holder over a veth LAN " +
		"through a relay that delays each direction by 0.25 ms (0.5 ms RTT), and the origin over a second veth; " +
		"the origin's 40 ms round trip added before each response's first byte and its 100 Mbit/s uplink shaped (meshtest.Origin)"
)

// runOffice puts an app that holds a 100 KiB and a 20 MiB asset beside
// fresh apps that fetch them (peer hits), and fresh apps with no peer that
// fetch them from an origin 40 ms away behind 100 Mbit/s (origin fetches),
// all with the app role's defaults. As root, the fresh apps run in a
// network namespace of their own (see netLab); else on loopback.
func runOffice(ctx context.Context, o options, p *progress) (*OfficeResult, error) {
	res := &OfficeResult{Network: officeLoopback, Samples: o.officeSamples}
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
	run := func(path string) ([]officeSample, error) {
		return officeLocal(ctx, m, path, org.URL(), holder, o.officeSamples)
	}
	lab, err := newNetLab(ctx)
	switch {
	case errors.Is(err, errNoNetns):
		p.step("office: %v: on loopback instead", err)
	case err != nil:
		return nil, err
	default:
		defer lab.Close()
		res.Network = officeNetns
		run = func(path string) ([]officeSample, error) {
			return lab.office(ctx, org.URL(), holder, path, o.officeSamples)
		}
	}
	for _, path := range []string{"small.bin", "large.bin"} {
		a, _ := m.Lookup(path)
		oa := OfficeAsset{Path: path, Bytes: a.Size}
		samples, err := run(path)
		if err != nil {
			return res, fmt.Errorf("office: %s: %w", path, err)
		}
		for _, s := range samples {
			if s.Kind == "peer" {
				oa.PeerTTFB, oa.PeerSources = append(oa.PeerTTFB, s.TTFB), append(oa.PeerSources, s.Source)
			} else {
				oa.OriginTTFB = append(oa.OriginTTFB, s.TTFB)
			}
		}
		oa.PeerTTFBp50, oa.OriginTTFBp50 = medianMs(oa.PeerTTFB), medianMs(oa.OriginTTFB)
		oa.Ratio = oa.PeerTTFBp50 / oa.OriginTTFBp50
		p.step("office: %s (%d KiB): TTFB peer hit p50 %.1f ms, origin p50 %.1f ms, ratio %.2f", path, a.Size>>10, oa.PeerTTFBp50, oa.OriginTTFBp50, oa.Ratio)
		res.Assets = append(res.Assets, oa)
	}
	return res, nil
}

// officeSample is one fresh app's fetch: a peer hit ("peer") or an origin
// fetch ("origin"), its TTFB in ms and where its bytes came from.
type officeSample struct {
	Kind   string  `json:"kind"`
	TTFB   float64 `json:"ttfb_ms"`
	Source string  `json:"source"`
}

// officeLocal takes samples peer hits and as many origin fetches of path,
// alternating, with fresh apps in this process.
func officeLocal(ctx context.Context, m *manifest.Manifest, path, origin string, holder *mesh.Node, samples int) ([]officeSample, error) {
	return officeSamples(ctx, m, path, origin, holder.Addrs()[0].String(), samples)
}

func officeSamples(ctx context.Context, m *manifest.Manifest, path, origin, boot string, samples int) ([]officeSample, error) {
	a, ok := m.Lookup(path)
	if !ok {
		return nil, fmt.Errorf("no %s in the manifest", path)
	}
	var out []officeSample
	for range samples {
		tt, src, err := officeFetch(ctx, m, a, origin, boot)
		if err != nil {
			return out, fmt.Errorf("peer hit: %w", err)
		}
		out = append(out, officeSample{"peer", ms(tt), src})
		if tt, src, err = officeFetch(ctx, m, a, origin, ""); err != nil {
			return out, fmt.Errorf("origin fetch: %w", err)
		}
		out = append(out, officeSample{"origin", ms(tt), src})
	}
	return out, nil
}

// office runs officeSamples in a child process inside the namespace: the
// holder is reached through a 0.5 ms-RTT relay on the LAN veth, the origin
// through a relay on the WAN veth.
func (l *netLab) office(ctx context.Context, origin string, holder *mesh.Node, path string, samples int) ([]officeSample, error) {
	ou, err := url.Parse(origin)
	if err != nil {
		return nil, err
	}
	wan, err := newDelayProxy(net.JoinHostPort(l.wan, "0"), ou.Host, 0)
	if err != nil {
		return nil, err
	}
	defer wan.Close()
	hostTCP, err := tcpTarget(holder)
	if err != nil {
		return nil, err
	}
	lan, err := newDelayProxy(net.JoinHostPort(l.lan, "0"), hostTCP, 250*time.Microsecond)
	if err != nil {
		return nil, err
	}
	defer lan.Close()
	boot := fmt.Sprintf("/ip4/%s/tcp/%d/p2p/%s", l.lan, lan.Addr().Port, holder.ID())
	cmd, err := l.command(ctx, "office", "-origin", fmt.Sprintf("http://%s", wan.Addr()), "-boot", boot,
		"-path", path, "-samples", strconv.Itoa(samples))
	if err != nil {
		return nil, err
	}
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("child in %s: %w", l.ns, err)
	}
	var out []officeSample
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var s officeSample
		if err := dec.Decode(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// tcpTarget is host:port of n's first TCP listen address.
func tcpTarget(n *mesh.Node) (string, error) {
	for _, a := range n.Addrs() {
		if ip, err := a.ValueForProtocol(ma.P_IP4); err == nil {
			if port, err := a.ValueForProtocol(ma.P_TCP); err == nil {
				return net.JoinHostPort(ip, port), nil
			}
		}
	}
	return "", fmt.Errorf("node %s listens on no TCP address", n.ID())
}

// officeChild is the namespace side of the office scenario: it loads the
// manifest from -origin and prints officeSamples as JSON lines.
func officeChild(args []string) int {
	fs := flag.NewFlagSet("office", flag.ContinueOnError)
	origin := fs.String("origin", "", "origin URL")
	boot := fs.String("boot", "", "the holder's address")
	path := fs.String("path", "", "asset")
	samples := fs.Int("samples", 1, "samples of each kind")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := func() error {
		m, err := loadManifest(ctx, *origin+"/manifest.json")
		if err != nil {
			return err
		}
		out, err := officeSamples(ctx, m, *path, *origin, *boot, *samples)
		enc := json.NewEncoder(os.Stdout)
		for _, s := range out {
			enc.Encode(s)
		}
		return err
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench office child:", err)
		return 1
	}
	return 0
}

// loadManifest gets and parses a manifest over plain HTTP.
func loadManifest(ctx context.Context, u string) (*manifest.Manifest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return manifest.Read(resp.Body)
}

// officeFetch starts a fresh app (bootstrapped to boot, if any, and waiting
// to hear that it holds a), reads the first MiB of a and returns its TTFB
// and where those bytes came from.
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
	// The first leaf (1 MiB at most) is what TTFB waits for; reading the
	// rest of a large asset would only drain the holder's serving cap (an
	// app serves 4 MiB/s) before the next sample.
	if _, err := io.CopyN(io.Discard, r, 1<<20); err != nil && err != io.EOF {
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
