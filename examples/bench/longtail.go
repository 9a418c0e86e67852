package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// LongTailResult is the long-tail scenario's part of the report.
type LongTailResult struct {
	Assets         int        `json:"assets"`
	Peers          int        `json:"peers"`
	FetchesPerPeer int        `json:"fetches_per_peer"`
	ZipfS          float64    `json:"zipf_s"`
	Offload        float64    `json:"offload"`
	Ranks          []RankBand `json:"ranks"`
	Failed         int        `json:"failed_fetches"`
	Seconds        float64    `json:"seconds"`
}

// RankBand is the offload of the assets of popularity ranks From to To.
type RankBand struct {
	From        int     `json:"from"`
	To          int     `json:"to"`
	Fetches     int     `json:"fetches"`
	PeerBytes   int64   `json:"peer_bytes"`
	OriginBytes int64   `json:"origin_bytes"`
	Offload     float64 `json:"offload"`
}

const zipfS = 1.0

func runLongTail(ctx context.Context, o options, p *progress) (*LongTailResult, error) {
	n := o.longAssets
	rng := rand.New(rand.NewPCG(o.seed, 2))
	sizes := map[string]int64{}
	for i := range n {
		sizes[rankPath(i+1)] = 20<<10 + rng.Int64N(600<<10)
	}
	org, err := o.origin(meshtest.GenerateSite(o.seed, sizes))
	if err != nil {
		return nil, err
	}
	defer org.Close()
	cfg := mesh.Config{Name: "bench-tail", DisableDHT: true}
	c, err := meshtest.NewCrowd(meshtest.CrowdConfig{Origin: org, Apps: o.longPeers, App: cfg, Rand: o.seed,
		Arrival:   meshtest.Poisson(5*time.Second, o.seed),
		AppAssets: func(i int) []string { return zipfPick(n, min(o.longFetches, n), o.seed+uint64(i)) }})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	start := time.Now()
	rep, err := c.Run(ctx)
	if rep == nil {
		return nil, err
	}
	res := &LongTailResult{Assets: n, Peers: o.longPeers, FetchesPerPeer: min(o.longFetches, n), ZipfS: zipfS,
		Offload: rep.AppOffload, Seconds: time.Since(start).Seconds()}
	res.Ranks = bands(rep, n)
	for _, f := range rep.Fetches {
		if f.Err != "" {
			res.Failed++
		}
	}
	for _, b := range res.Ranks {
		p.step("longtail: ranks %3d-%3d: %4d fetches, offload %.3f", b.From, b.To, b.Fetches, b.Offload)
	}
	p.step("longtail: offload %.3f over %d fetches (%d failed), %.0f s", res.Offload, len(rep.Fetches), res.Failed, res.Seconds)
	return res, ctx.Err()
}

func rankPath(rank int) string { return fmt.Sprintf("a/%04d.bin", rank) }

// zipfPick draws k distinct ranks of 1..n with probability ∝ 1/rank^s.
func zipfPick(n, k int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 3))
	w := make([]float64, n)
	total := 0.0
	for i := range w {
		w[i] = 1 / math.Pow(float64(i+1), zipfS)
		total += w[i]
	}
	var out []string
	for len(out) < k {
		x := rng.Float64() * total
		i := 0
		for ; i < n-1 && x >= w[i]; i++ {
			x -= w[i]
		}
		if w[i] == 0 {
			continue
		}
		total -= w[i]
		w[i] = 0
		out = append(out, rankPath(i+1))
	}
	return out
}

// bands sums the apps' fetches by popularity rank: 1-10 (viral), 11-50
// (popular), 51 and beyond (the tail).
func bands(rep *meshtest.Report, n int) []RankBand {
	bs := []RankBand{{From: 1, To: min(10, n)}, {From: 11, To: min(50, n)}, {From: 51, To: n}}
	for _, f := range rep.Fetches {
		if f.Err != "" || !meshtest.FromApps(f) {
			continue
		}
		rank, _ := strconv.Atoi(f.Path[2:6])
		for i := range bs {
			if rank >= bs[i].From && rank <= bs[i].To {
				bs[i].Fetches++
				bs[i].PeerBytes += f.PeerBytes
				bs[i].OriginBytes += f.OriginBytes
			}
		}
	}
	var out []RankBand
	for _, b := range bs {
		if b.From > b.To {
			continue
		}
		if t := b.PeerBytes + b.OriginBytes; t > 0 {
			b.Offload = float64(b.PeerBytes) / float64(t)
		}
		out = append(out, b)
	}
	return out
}
