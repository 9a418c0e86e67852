package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// ThroughputResult is the throughput scenario's part of the report.
type ThroughputResult struct {
	Bytes   int64           `json:"bytes"`
	Reps    int             `json:"reps"`
	Cores   int             `json:"cores"`
	Runs    []ThroughputRun `json:"runs"`
	Ceiling Ceiling         `json:"ceiling"`
	// PeerOfCeiling is the TCP peer fetch's ratio to the ceiling by CPU:
	// the ceiling's CPU per GiB over the fetch's, the ratio its rate would
	// have to the ceiling's with every core to itself. The ceiling is NumCPU
	// over a CPU cost, so it assumes every core; the fetch's wall-clock rate
	// (PeerOfCeilingWall) has only what other jobs leave it: with the load
	// average at 10-18 on 2 cores, a quarter of a core, and 0.05 of the
	// ceiling for a fetch at 0.47 of it by CPU. Runs[i].Cores shows the
	// cores each way of fetching got (a fetch that waits instead of working
	// shows fewer than http.Get's).
	PeerOfCeiling     float64 `json:"peer_tcp_of_ceiling"`
	PeerOfCeilingWall float64 `json:"peer_tcp_of_ceiling_wall"`
}

// ThroughputRun is one way of fetching the asset (medians of the reps).
type ThroughputRun struct {
	Name       string  `json:"name"`
	MiBps      float64 `json:"mib_per_s"`
	RatioHTTP  float64 `json:"ratio_to_http"`
	CPUPerGiB  float64 `json:"cpu_s_per_gib"`
	Cores      float64 `json:"cores_used"` // CPU time over wall time
	wall, cpus []time.Duration
}

// Ceiling is what a verified, encrypted peer fetch could reach on this
// machine: NumCPU over the CPU time per byte that it cannot avoid.
type Ceiling struct {
	MiBps     float64 `json:"mib_per_s"`
	RatioHTTP float64 `json:"ratio_to_http"`
	CPUPerGiB float64 `json:"cpu_s_per_gib"`
	SHA256    float64 `json:"sha256_cpu_s_per_gib"`
	AESGCM    float64 `json:"aes_gcm_cpu_s_per_gib"`
	HTTP      float64 `json:"http_cpu_s_per_gib"`
}

const tputPath = "big.bin"

func runThroughput(ctx context.Context, o options, p *progress) (*ThroughputResult, error) {
	size := int64(o.tputMiB) * mib
	site := meshtest.GenerateSite(o.seed, map[string]int64{tputPath: size})
	org, err := meshtest.NewOrigin(meshtest.OriginConfig{Site: site})
	if err != nil {
		return nil, err
	}
	defer org.Close()
	m := org.Manifest()
	seed, err := mesh.New(ctx, meshtest.LocalConfig(mesh.Config{Name: "bench-tput", Role: mesh.RoleSeed, Origin: org.URL(),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}, ServeBytesPerSecond: -1, ServeConcurrency: -1}))
	if err != nil {
		return nil, err
	}
	defer seed.Close()
	if err := seed.Pin(ctx, m); err != nil {
		return nil, err
	}
	runs := []*ThroughputRun{{Name: "http-get"}, {Name: "origin"}, {Name: "peer-tcp"}, {Name: "peer-quic"}}
	for rep := range o.tputReps {
		for _, r := range runs {
			setup := func() (func() (int64, error), func(), error) { return nodeFetch(ctx, m, r.Name, seed, org) }
			if r.Name == "http-get" {
				setup = func() (func() (int64, error), func(), error) {
					return func() (int64, error) { return httpGet(ctx, org.URL()+"/"+tputPath) }, func() {}, nil
				}
			}
			if err := r.measure(size, setup); err != nil {
				return nil, fmt.Errorf("%s: %w", r.Name, err)
			}
			p.step("throughput: rep %d/%d %-9s %6.0f MiB/s", rep+1, o.tputReps, r.Name, float64(size)/mib/r.wall[len(r.wall)-1].Seconds())
		}
	}
	res := &ThroughputResult{Bytes: size, Reps: o.tputReps, Cores: runtime.NumCPU()}
	httpRate := float64(size) / median(runs[0].wall).Seconds()
	for _, r := range runs {
		r.MiBps = float64(size) / median(r.wall).Seconds() / mib
		r.RatioHTTP = r.MiBps * mib / httpRate
		r.CPUPerGiB = median(r.cpus).Seconds() / (float64(size) / (1 << 30))
		r.Cores = r.CPUPerGiB * r.MiBps / 1024
		res.Runs = append(res.Runs, *r)
	}
	res.Ceiling = ceiling(site[tputPath], runs[0].CPUPerGiB, httpRate)
	res.PeerOfCeiling, res.PeerOfCeilingWall = ofCeiling(*runs[2], res.Ceiling)
	p.step("throughput: ceiling %.0f MiB/s (%.2f CPU s/GiB on %d cores); peer TCP at %.2f of it by CPU, %.2f by wall clock on %.2f cores (http.Get %.2f)",
		res.Ceiling.MiBps, res.Ceiling.CPUPerGiB, res.Cores, res.PeerOfCeiling, res.PeerOfCeilingWall, runs[2].Cores, runs[0].Cores)
	return res, nil
}

// measure sets a fetch up, then times it (wall and process CPU time: the
// serving side runs in this process too) and tears it down.
func (r *ThroughputRun) measure(size int64, setup func() (func() (int64, error), func(), error)) error {
	fn, done, err := setup()
	if err != nil {
		return err
	}
	defer done()
	runtime.GC()
	c0, t0 := meshtest.CPUTime(), time.Now()
	n, err := fn()
	wall, cpu := time.Since(t0), meshtest.CPUTime()-c0
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("read %d bytes, want %d", n, size)
	}
	r.wall, r.cpus = append(r.wall, wall), append(r.cpus, cpu)
	return nil
}

// nodeFetch sets up a fresh app node that fetches the asset from the seed
// over TCP or QUIC (no origin), or from the origin (no peer): the node is
// made before the clock starts and closed after it stops, as an app makes
// one node per run, not one per fetch.
func nodeFetch(ctx context.Context, m *manifest.Manifest, how string, seed *mesh.Node, org *meshtest.Origin) (func() (int64, error), func(), error) {
	cfg := mesh.Config{Name: "bench-tput", ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}
	a, _ := m.Lookup(tputPath)
	switch how {
	case "origin":
		cfg.Origin = org.URL()
	case "peer-tcp":
		cfg.Bootstrap = []string{addrOf(seed, "/tcp/")}
	case "peer-quic":
		cfg.Bootstrap = []string{addrOf(seed, "/quic-v1/p2p/")}
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	}
	n, err := mesh.New(ctx, meshtest.LocalConfig(cfg))
	if err != nil {
		return nil, nil, err
	}
	if how != "origin" {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := n.WaitPeers(wctx, 1); err != nil {
			n.Close()
			return nil, nil, err
		}
		if err := meshtest.WaitProvider(wctx, n, a.Cid); err != nil {
			n.Close()
			return nil, nil, err
		}
	}
	fn := func() (int64, error) {
		r, _, err := n.OpenAsset(ctx, m, tputPath)
		if err != nil {
			return 0, err
		}
		defer r.Close()
		got, err := io.Copy(io.Discard, r)
		if st := r.Stats(); err == nil && how != "origin" && st.PeerBytes != a.Size {
			err = fmt.Errorf("%d of %d bytes from the peer", st.PeerBytes, a.Size)
		}
		return got, err
	}
	return fn, func() { n.Close() }, nil
}

// addrOf returns n's first address containing part.
func addrOf(n *mesh.Node, part string) string {
	for _, a := range n.Addrs() {
		if s := a.String(); strings.Contains(s, part) {
			return s
		}
	}
	return ""
}

func httpGet(ctx context.Context, u string) (int64, error) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(io.Discard, resp.Body)
}

// ceiling computes the ceiling as fetch's BenchmarkThroughput does: the
// bytes must at least be hashed once, sealed and opened once and carried as
// http.Get carries them (meshtest.CeilingCPU); with every core busy, no
// faster than NumCPU over that CPU time.
func ceiling(data []byte, httpCPU, httpRate float64) Ceiling {
	c := Ceiling{HTTP: httpCPU}
	c.SHA256, c.AESGCM = meshtest.CeilingCPU(data)
	c.CPUPerGiB = c.SHA256 + c.AESGCM + c.HTTP
	rate := float64(runtime.NumCPU()) / c.CPUPerGiB * (1 << 30)
	c.MiBps, c.RatioHTTP = rate/mib, rate/httpRate
	return c
}

// ofCeiling returns r's ratio to the ceiling c by CPU (c's CPU per GiB over
// r's) and by wall clock (r's rate over c's, which assumes every core free).
func ofCeiling(r ThroughputRun, c Ceiling) (byCPU, byWall float64) {
	if r.CPUPerGiB > 0 {
		byCPU = c.CPUPerGiB / r.CPUPerGiB
	}
	if c.MiBps > 0 {
		byWall = r.MiBps / c.MiBps
	}
	return byCPU, byWall
}

func median(ds []time.Duration) time.Duration { return meshtest.Percentile(ds, 0.5) }
