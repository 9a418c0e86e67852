package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// CrowdResult is the crowd scenario's part of the report.
type CrowdResult struct {
	SiteBytes            int64      `json:"site_bytes"`
	Assets               int        `json:"assets"`
	UplinkBytesPerSecond int64      `json:"uplink_bytes_per_second"`
	LatencyMs            float64    `json:"latency_ms"`
	Runs                 []CrowdRun `json:"runs"`
}

// CrowdRun is one crowd, or its baseline.
type CrowdRun struct {
	Name          string    `json:"name"`
	N             int       `json:"n"`
	Arrival       string    `json:"arrival"`
	Seeds         int       `json:"seeds"`
	Mesh          bool      `json:"mesh"`
	Striping      bool      `json:"striping"`
	Together      bool      `json:"together"`
	Repeat        int       `json:"repeat"`
	Offload       float64   `json:"offload"`
	OriginSent    int64     `json:"origin_sent_bytes"`
	Copies        float64   `json:"copies"`
	TTFBp50       float64   `json:"ttfb_p50_ms"`
	TTFBp95       float64   `json:"ttfb_p95_ms"`
	CompletionP50 float64   `json:"completion_p50_ms"`
	CompletionP95 float64   `json:"completion_p95_ms"`
	PeerTTFB      []float64 `json:"peer_ttfb_ms"`
	OriginTTFB    []float64 `json:"origin_ttfb_ms"`
	Failed        int       `json:"failed_fetches"`
	Seconds       float64   `json:"seconds"`
	// AppLinks is, for a mesh crowd, how many other nodes each app was
	// connected to at the end (meshtest.NodeReport.Links), fewest first:
	// the graph a run's figures come from.
	AppLinks []int `json:"app_links,omitempty"`
}

type schedule struct {
	name    string
	arrival meshtest.Arrival
}

func runCrowd(ctx context.Context, o options, p *progress) (*CrowdResult, error) {
	site := meshtest.DemoSite(42, int64(o.videoMiB)*mib)
	res := &CrowdResult{SiteBytes: site.Size(), Assets: len(site), UplinkBytesPerSecond: int64(o.uplinkMiB * mib), LatencyMs: ms(o.latency)}
	within := schedule{o.within.String(), meshtest.Staggered(o.within)}
	poisson := schedule{"poisson " + o.poisson.String(), meshtest.Poisson(o.poisson, o.seed)}
	for _, n := range slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(o.crowdN), o.poissonN...)))) {
		var scheds []schedule
		if slices.Contains(o.crowdN, n) {
			scheds = append(scheds, within)
		}
		if slices.Contains(o.poissonN, n) {
			scheds = append(scheds, poisson)
		}
		for _, s := range scheds {
			for k := range o.repeat {
				runs, err := crowdRound(ctx, o, site, n, s, p)
				for i := range runs {
					runs[i].Repeat = k
				}
				res.Runs = append(res.Runs, runs...)
				if err != nil {
					return res, err
				}
			}
		}
	}
	return res, nil
}

// crowdRound runs n apps on schedule s once in each way: no seed and one
// seed, striping as the options say, and the baseline without the mesh.
func crowdRound(ctx context.Context, o options, site meshtest.Site, n int, s schedule, p *progress) ([]CrowdRun, error) {
	var runs []CrowdRun
	for _, seeds := range []int{0, 1} {
		for _, striping := range o.striping {
			r, err := crowdRun(ctx, o, site, n, s, seeds, striping)
			if err != nil {
				return runs, err
			}
			p.step("crowd: %-28s offload %.3f, origin copies %.2f, TTFB p50 %.0f ms, completion p50 %.0f ms (%.0f s), app links %s",
				r.Name, r.Offload, r.Copies, r.TTFBp50, r.CompletionP50, r.Seconds, r.linksSummary())
			runs = append(runs, r)
		}
	}
	r, err := plainRun(ctx, o, site, n, s)
	if err != nil {
		return runs, err
	}
	p.step("crowd: %-28s origin copies %.2f, TTFB p50 %.0f ms, completion p50 %.0f ms (%.0f s)",
		r.Name, r.Copies, r.TTFBp50, r.CompletionP50, r.Seconds)
	return append(runs, r), nil
}

// assets returns the paths each app or client fetches: nil (every path,
// in order) or, together, the page first.
func (o options) assets(site meshtest.Site) []string {
	if !o.together {
		return nil
	}
	return site.PathsFrom("index.html")
}

// togetherName is what a crowd's name gains when it loads together.
func (o options) togetherName() string {
	if o.together {
		return ", together"
	}
	return ""
}

func (o options) origin(site meshtest.Site) (*meshtest.Origin, error) {
	return meshtest.NewOrigin(meshtest.OriginConfig{Site: site, BytesPerSecond: int64(o.uplinkMiB * mib), Latency: o.latency})
}

// crowdRun runs n app peers (and seeds) of the mesh on schedule s, with
// striping on or off.
func crowdRun(ctx context.Context, o options, site meshtest.Site, n int, s schedule, seeds int, striping bool) (CrowdRun, error) {
	r := CrowdRun{Name: fmt.Sprintf("%d apps, %s, %d seed", n, s.name, seeds), N: n, Arrival: s.name, Seeds: seeds, Mesh: true, Striping: striping}
	r.Together, r.Name = o.together, r.Name+o.togetherName()
	org, err := o.origin(site)
	if err != nil {
		return r, err
	}
	defer org.Close()
	cfg := mesh.Config{Name: "bench", DisableDHT: true, FetchStriping: mesh.On}
	if !striping {
		r.Name += ", striping off"
		cfg.FetchStriping = mesh.Off
	}
	c, err := meshtest.NewCrowd(meshtest.CrowdConfig{Origin: org, Seeds: seeds, Apps: n, Seed: cfg, App: cfg, Arrival: s.arrival, Rand: o.seed,
		Assets: o.assets(site), Together: o.together})
	if err != nil {
		return r, err
	}
	defer c.Close()
	start := time.Now()
	rep, err := c.Run(ctx)
	if rep == nil {
		return r, err
	}
	r.Seconds = time.Since(start).Seconds()
	r.Offload, r.OriginSent, r.Copies = rep.AppOffload, rep.AppOriginSent, rep.AppCopies
	ttfb := rep.TTFBs(meshtest.FromApps)
	r.TTFBp50, r.TTFBp95 = ms(meshtest.Percentile(ttfb, 0.5)), ms(meshtest.Percentile(ttfb, 0.95))
	done := rep.Completions()
	r.CompletionP50, r.CompletionP95 = ms(meshtest.Percentile(done, 0.5)), ms(meshtest.Percentile(done, 0.95))
	r.PeerTTFB = msAll(rep.TTFBs(func(f meshtest.FetchReport) bool { return meshtest.FromApps(f) && f.Source() == "peer" }))
	r.OriginTTFB = msAll(rep.TTFBs(func(f meshtest.FetchReport) bool { return meshtest.FromApps(f) && f.Source() == "origin" }))
	for _, f := range rep.Fetches {
		if f.Err != "" {
			r.Failed++
		}
	}
	r.AppLinks = rep.AppLinks()
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	return r, nil // failed fetches are figures, not a failed run
}

// linksSummary is "min/median/max" of the apps' links, "-" without them.
func (r CrowdRun) linksSummary() string {
	ls := r.AppLinks
	if len(ls) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d/%d", ls[0], ls[(len(ls)-1)/2], ls[len(ls)-1])
}

// plainRun is the baseline: n plain HTTP clients, each with its own
// connections, fetching every asset one after another on schedule s (with
// -crowd-together the page first, then the others at once).
func plainRun(ctx context.Context, o options, site meshtest.Site, n int, s schedule) (CrowdRun, error) {
	r := CrowdRun{Name: fmt.Sprintf("%d http clients, %s", n, s.name) + o.togetherName(), N: n, Arrival: s.name, Together: o.together}
	org, err := o.origin(site)
	if err != nil {
		return r, err
	}
	defer org.Close()
	paths := o.assets(site)
	if paths == nil {
		paths = site.Paths()
	}
	times := s.arrival(n)
	var mu sync.Mutex
	var ttfbs, dones []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(times[i])
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			arrived := time.Now()
			tt, failed := plainClient(ctx, org.URL(), paths, o.together)
			mu.Lock()
			defer mu.Unlock()
			ttfbs = append(ttfbs, tt...)
			dones = append(dones, time.Since(arrived))
			r.Failed += failed
		}()
	}
	wg.Wait()
	r.Seconds = time.Since(start).Seconds()
	r.OriginSent = org.Sent()
	r.Copies = float64(r.OriginSent) / float64(site.Size())
	r.TTFBp50, r.TTFBp95 = ms(meshtest.Percentile(ttfbs, 0.5)), ms(meshtest.Percentile(ttfbs, 0.95))
	r.CompletionP50, r.CompletionP95 = ms(meshtest.Percentile(dones, 0.5)), ms(meshtest.Percentile(dones, 0.95))
	r.OriginTTFB = msAll(ttfbs)
	return r, ctx.Err()
}

// plainClient GETs every path with its own client, in turn or, together,
// the first and then the others at once, returning each time to first
// byte and the number that failed.
func plainClient(ctx context.Context, base string, paths []string, together bool) ([]time.Duration, int) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	var (
		mu     sync.Mutex
		ttfbs  []time.Duration
		failed int
	)
	one := func(p string) {
		tt, err := plainGet(ctx, c, base+"/"+p)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			return
		}
		ttfbs = append(ttfbs, tt)
	}
	meshtest.Load(ctx, paths, together, one)
	return ttfbs, failed
}

// plainGet GETs url to the end and returns its time to first byte.
func plainGet(ctx context.Context, c *http.Client, url string) (time.Duration, error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	one := make([]byte, 1)
	_, err = io.ReadFull(resp.Body, one)
	tt := time.Since(t0)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return tt, err
}
