package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePlots writes the PNG plots of what ran into dir and returns their
// paths.
func writePlots(dir string, r *Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	save := func(name string, p *plot.Plot, err error) error {
		if err != nil || p == nil {
			return err
		}
		f := filepath.Join(dir, name)
		if err := p.Save(7*vg.Inch, 4.5*vg.Inch, f); err != nil {
			return err
		}
		files = append(files, f)
		return nil
	}
	if c := r.Crowd; c != nil {
		p, err := crowdPlot(c, "offload (peer bytes ÷ all the apps fetched)", func(r CrowdRun) float64 { return r.Offload }, false)
		if err := save("crowd-offload.png", p, err); err != nil {
			return files, err
		}
		p, err = crowdPlot(c, "origin egress (copies of the site)", func(r CrowdRun) float64 { return r.Copies }, true)
		if err := save("crowd-origin-copies.png", p, err); err != nil {
			return files, err
		}
		p, err = ttfbPlot(c)
		if err := save("crowd-ttfb.png", p, err); err != nil {
			return files, err
		}
	}
	if t := r.Throughput; t != nil {
		p, err := throughputPlot(t)
		if err := save("throughput.png", p, err); err != nil {
			return files, err
		}
	}
	return files, nil
}

// crowdPlot draws y against N, a line per kind of crowd (arrival × seeds,
// and the baseline when withBaseline).
func crowdPlot(c *CrowdResult, ylabel string, y func(CrowdRun) float64, withBaseline bool) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("crowd: %.1f MiB site, origin %.0f MiB/s, %.0f ms", float64(c.SiteBytes)/mib, float64(c.UplinkBytesPerSecond)/mib, c.LatencyMs)
	p.X.Label.Text = "app peers (N)"
	p.Y.Label.Text = ylabel
	series := map[string]plotter.XYs{}
	var names []string
	for _, r := range c.Runs {
		if !r.Mesh && !withBaseline {
			continue
		}
		name := fmt.Sprintf("mesh, %s, %d seed", r.Arrival, r.Seeds)
		if r.Mesh && !r.Striping {
			name += ", striping off"
		}
		if !r.Mesh {
			name = "no mesh (http), " + r.Arrival
		}
		if _, ok := series[name]; !ok {
			names = append(names, name)
		}
		series[name] = append(series[name], plotter.XY{X: float64(r.N), Y: y(r)})
	}
	slices.Sort(names)
	var args []any
	for _, n := range names {
		args = append(args, n, series[n])
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	p.Legend.Top = true
	return p, nil
}

// ttfbPlot draws the distributions (quantile against TTFB) of peer hits
// and origin fetches over every mesh crowd, and of the baseline's fetches.
func ttfbPlot(c *CrowdResult) (*plot.Plot, error) {
	var peer, origin, plain []float64
	for _, r := range c.Runs {
		if r.Mesh {
			peer, origin = append(peer, r.PeerTTFB...), append(origin, r.OriginTTFB...)
		} else {
			plain = append(plain, r.OriginTTFB...)
		}
	}
	p := plot.New()
	p.Title.Text = "time to first byte, every crowd of the run"
	p.X.Label.Text = "TTFB (ms)"
	p.Y.Label.Text = "share of fetches at or below"
	var args []any
	for _, s := range []struct {
		name string
		v    []float64
	}{{"peer hits (mesh)", peer}, {"origin fetches (mesh)", origin}, {"no mesh (http)", plain}} {
		if len(s.v) > 0 {
			args = append(args, fmt.Sprintf("%s, %d", s.name, len(s.v)), cdf(s.v))
		}
	}
	if len(args) == 0 {
		return nil, nil
	}
	if err := plotutil.AddLines(p, args...); err != nil {
		return nil, err
	}
	p.Legend.Top, p.Legend.Left = true, false
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	return p, nil
}

func cdf(v []float64) plotter.XYs {
	s := slices.Clone(v)
	slices.Sort(s)
	xy := make(plotter.XYs, len(s))
	for i, x := range s {
		xy[i] = plotter.XY{X: max(x, 0.01), Y: float64(i+1) / float64(len(s))}
	}
	return xy
}

// throughputPlot draws every way's throughput and the ceiling as a ratio
// to http.Get.
func throughputPlot(t *ThroughputResult) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("throughput, %d MiB on loopback, %d cores (ratio to http.Get)", t.Bytes/mib, t.Cores)
	p.Y.Label.Text = "× http.Get"
	var vals plotter.Values
	var names []string
	for _, r := range t.Runs {
		vals = append(vals, r.RatioHTTP)
		names = append(names, fmt.Sprintf("%s\n%.0f MiB/s", r.Name, r.MiBps))
	}
	vals = append(vals, t.Ceiling.RatioHTTP)
	names = append(names, fmt.Sprintf("ceiling\n%.0f MiB/s", t.Ceiling.MiBps))
	bars, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, err
	}
	bars.Color = color.RGBA{R: 60, G: 110, B: 180, A: 255}
	p.Add(bars)
	p.NominalX(names...)
	return p, nil
}
