package main

import (
	"fmt"
	"slices"
	"strings"
)

// targets puts every target of the benchmark issue (must-show 2) that this
// run measured beside its figure. Nothing is estimated: a target whose
// scenario did not run, or ran at another size, is not listed.
func targets(r *Report) []Target {
	var ts []Target
	if c := r.Crowd; c != nil {
		ts = append(ts, crowdTargets(c)...)
	}
	if t := r.Throughput; t != nil && t.Ceiling.MiBps > 0 {
		note := fmt.Sprintf("by CPU per GiB; by wall clock %.2f, on %.2f of %d cores (http.Get on %.2f)",
			t.PeerOfCeilingWall, t.Runs[2].Cores, t.Cores, t.Runs[0].Cores)
		ts = append(ts, check("throughput: peer fetch (TCP) of the in-run ceiling", t.PeerOfCeiling, ">=", 0.8, "×", note))
	}
	if f := r.Footprint; f != nil {
		ts = append(ts, footprintTargets(f)...)
	}
	if s := r.Scale; s != nil {
		ts = append(ts,
			check(fmt.Sprintf("scale: %d peers, announce traffic per peer (idle)", s.Peers), s.AnnounceBytesPerSecPerPeer, "report", 0, "B/s", ""),
			check(fmt.Sprintf("scale: %d peers, time until all know a new root", s.Peers), s.RootLearnedMaxMs, "report", 0, "ms",
				fmt.Sprintf("%d of the %d others learned it within 30 s; the figure is the last of them", s.Learned, s.Peers-1)))
	}
	if o := r.Office; o != nil {
		staged := "loopback with user-space origin delay, no namespaces"
		if o.Network == officeNetns {
			staged = "network namespaces, LAN 0.5 ms RTT, origin 40 ms"
		}
		for _, a := range o.Assets {
			ts = append(ts, check(fmt.Sprintf("office: %s, peer-hit TTFB ÷ origin TTFB", a.Path), a.Ratio, "<=", 0.1, "×",
				fmt.Sprintf("%.1f ms vs %.1f ms; %s", a.PeerTTFBp50, a.OriginTTFBp50, staged)))
		}
	}
	return ts
}

// crowdTargets puts the fetch issue's crowd must-shows beside the medians
// of the runs that measured them (-crowd-repeat; one run is its own
// median), each run's figure in the note, with the same crowds' striping
// off figures when those ran too.
func crowdTargets(c *CrowdResult) []Target {
	var ts []Target
	find := func(n int, poisson bool, seeds int, isMesh, striping bool) []CrowdRun {
		var out []CrowdRun
		for _, r := range c.Runs {
			if r.N == n && (r.Arrival[0] == 'p') == poisson && r.Mesh == isMesh && (!isMesh || r.Seeds == seeds && r.Striping == striping) {
				out = append(out, r)
			}
		}
		return out
	}
	site := fmt.Sprintf("site %.1f MiB", float64(c.SiteBytes)/mib)
	copies := func(r CrowdRun) float64 { return r.Copies }
	if rs := find(50, false, 0, true, true); len(rs) > 0 {
		off := find(50, false, 0, true, false)
		ts = append(ts, check("crowd: 50 within "+rs[0].Arrival+", no seed: origin copies", medianOf(rs, copies), "<=", 1.25, "copies",
			site+figures(rs, off, copies, "%.2f")))
		done := func(r CrowdRun) float64 { return r.CompletionP50 }
		if base := medianOf(find(50, false, 0, false, false), done); base > 0 {
			m := medianOf(rs, done)
			ts = append(ts, check("crowd: 50 within "+rs[0].Arrival+", no seed: completion p50 ÷ no mesh", m/base, "<=", 0.5, "×",
				fmt.Sprintf("%.0f ms vs %.0f ms (fetch issue, must-show 2)", m, base)+figures(rs, off, done, "%.0f")))
		}
	}
	if rs := find(50, true, 0, true, true); len(rs) > 0 {
		offload := func(r CrowdRun) float64 { return r.Offload }
		ts = append(ts, check("crowd: 50 "+rs[0].Arrival+", no seed: offload", medianOf(rs, offload), ">=", 0.95, "",
			site+figures(rs, find(50, true, 0, true, false), offload, "%.3f")))
	}
	return ts
}

// medianOf is the median of f over runs (the mean of the middle two of an
// even number).
func medianOf(runs []CrowdRun, f func(CrowdRun) float64) float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// figures is a note's list of each run's figure, "" for a single run with
// no striping-off runs beside it.
func figures(on, off []CrowdRun, f func(CrowdRun) float64, format string) string {
	list := func(rs []CrowdRun) string {
		var parts []string
		for _, r := range rs {
			parts = append(parts, fmt.Sprintf(format, f(r)))
		}
		return strings.Join(parts, ", ")
	}
	var out string
	if len(on) > 1 {
		out = fmt.Sprintf("; median of %d runs: %s", len(on), list(on))
	}
	if len(off) > 0 {
		out += fmt.Sprintf("; striping off: median "+format+" (%s)", medianOf(off, f), list(off))
	}
	return out
}

func footprintTargets(f *FootprintResult) []Target {
	var ts []Target
	if f.AppIdleRSS > 0 {
		ts = append(ts, check(fmt.Sprintf("footprint: idle app node VmRSS (after %.0f s)", f.IdleSeconds), float64(f.AppIdleRSS)/mib, "<=", 40, "MiB", "target < 40 MiB"))
	}
	if f.AppFinalRSS > 0 {
		note := "never under 50 MiB in the window"
		if f.AppBackUnder >= 0 {
			note = fmt.Sprintf("under 50 MiB %.0f s after the fetch", f.AppBackUnder)
		}
		ts = append(ts, check(fmt.Sprintf("footprint: app VmRSS %.0f s after a %d MiB fetch", f.AfterSeconds, f.FetchBytes/mib),
			float64(f.AppFinalRSS)/mib, "<=", 50, "MiB", note))
	}
	if f.SeedIdleFound {
		ts = append(ts, check(fmt.Sprintf("footprint: idle seed RssAnon (after %.0f s)", f.IdleSeconds), float64(f.SeedIdleAnon)/mib, "<=", 40, "MiB", "target < 40 MiB"))
	}
	if f.Streams > 0 {
		ts = append(ts, check(fmt.Sprintf("footprint: %d streams at %.0f MiB/s, app RssAnon above the level before", f.Streams, f.PaceMiBps),
			float64(f.StreamsAnonDelta)/mib, "<=", 40, "MiB", "fetch issue, must-show 7: 4 streams at video pace hold <= 40 MiB"))
	}
	if k := f.Kubo; k != nil {
		ts = append(ts, check(fmt.Sprintf("footprint: idle Kubo daemon VmRSS beside (after %.0f s)", k.At), float64(k.VmRSS)/mib, "report", 0, "MiB",
			fmt.Sprintf("RssAnon %.1f MiB, RssFile %.1f MiB", float64(k.RssAnon)/mib, float64(k.RssFile)/mib)))
	}
	return ts
}
