package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcdn/meshcdn/meshtest"
)

func TestMain(m *testing.M) {
	// The footprint scenario runs this binary again as a node.
	if len(os.Args) > 2 && os.Args[1] == "-child" {
		os.Exit(childMain(os.Args[2:]))
	}
	goleak.VerifyTestMain(m, meshtest.LeakOptions()...)
}

// TestTinyRun runs every scenario at a tiny size and checks that each wrote
// its figures, the JSON and the plots.
func TestTinyRun(t *testing.T) {
	dir := t.TempDir()
	o, err := parseFlags([]string{"-tiny", "-crowd-repeat", "2", "-json", filepath.Join(dir, "bench.json"), "-plots", filepath.Join(dir, "plots")})
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep := run(ctx, o, newProgress(&log))
	t.Log(log.String())
	if len(rep.Errors) > 0 {
		t.Fatalf("scenarios failed: %v", rep.Errors)
	}
	if err := writeReport(o, rep); err != nil {
		t.Fatal(err)
	}
	if c := rep.Crowd; c == nil || len(c.Runs) != 12 {
		t.Errorf("crowd: %+v, want 12 runs (2 schedules × 2 repeats × (2 mesh crowds + baseline))", c)
	} else {
		for i, r := range c.Runs {
			if want := i / 3 % 2; r.Repeat != want {
				t.Errorf("crowd run %d (%s) is repeat %d, want %d", i, r.Name, r.Repeat, want)
			}
			if r.Failed > 0 || r.TTFBp50 <= 0 || r.CompletionP50 < r.TTFBp50 || (!r.Mesh && r.Copies < float64(r.N)*0.99) {
				t.Errorf("crowd run %+v: want no failure, TTFB within completion, and a baseline costing N copies", r)
			}
			if r.Mesh && (len(r.AppLinks) != r.N || r.AppLinks[0] < 1) || !r.Mesh && r.AppLinks != nil {
				t.Errorf("crowd run %s: app links %v, want each of %d apps linked to another node (mesh runs only)", r.Name, r.AppLinks, r.N)
			}
		}
	}
	if l := rep.LongTail; l == nil || len(l.Ranks) == 0 || l.Failed > 0 {
		t.Errorf("longtail: %+v", l)
	}
	if th := rep.Throughput; th == nil || len(th.Runs) != 4 || th.Ceiling.MiBps <= 0 || th.PeerOfCeiling <= 0 {
		t.Errorf("throughput: %+v", th)
	}
	if f := rep.Footprint; f == nil || f.AppIdleRSS <= 0 || f.AppFinalRSS <= 0 || !f.SeedIdleFound {
		t.Errorf("footprint: %+v", f)
	}
	if s := rep.Scale; s == nil || s.Learned != s.Peers-1 || s.TableEntries < s.Peers*scaleRoots {
		t.Errorf("scale: %+v", s)
	}
	if of := rep.Office; of == nil || len(of.Assets) != 2 || of.Assets[0].PeerTTFBp50 <= 0 || of.Assets[0].OriginTTFBp50 < 40 {
		t.Errorf("office: %+v, want both assets, and origin TTFBs above the origin's 40 ms", of)
	} else if os.Geteuid() == 0 && of.Network != officeNetns {
		t.Errorf("office ran as root on %q, want its own network namespaces", of.Network)
	}
	b, err := os.ReadFile(filepath.Join(dir, "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.Schema != 1 || len(back.Targets) == 0 || len(back.Plots) != 4 {
		t.Errorf("bench.json: schema %d, %d targets, plots %v, %v", back.Schema, len(back.Targets), back.Plots, err)
	}
	for _, p := range back.Plots {
		if fi, err := os.Stat(p); err != nil || fi.Size() < 1000 {
			t.Errorf("plot %s: %v", p, err)
		}
	}
}

// TestCrowdRepeatFlag checks that -crowd-repeat must be 1 or more.
func TestCrowdRepeatFlag(t *testing.T) {
	for _, v := range []string{"0", "-1"} {
		if _, err := parseFlags([]string{"-crowd-repeat", v}); err == nil {
			t.Errorf("-crowd-repeat %s accepted", v)
		}
	}
	if o, err := parseFlags([]string{"-crowd-repeat", "3"}); err != nil || o.repeat != 3 {
		t.Errorf("-crowd-repeat 3: repeat %d, err %v", o.repeat, err)
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		figure, bound float64
		op            string
		met           bool
		by            string
	}{
		{1.0, 1.25, "<=", true, "met with 0.25"},
		{3.0, 1.25, "<=", false, "missed by 1.75"},
		{0.9, 0.95, ">=", false, "missed by 0.05"},
		{0.99, 0.95, ">=", true, "met with 0.04"},
	} {
		got := check("x", tc.figure, tc.op, tc.bound, "u", "")
		if got.Met != tc.met || !strings.HasPrefix(got.By, tc.by) {
			t.Errorf("check(%v %s %v) = met %v, %q; want %v, %q…", tc.figure, tc.op, tc.bound, got.Met, got.By, tc.met, tc.by)
		}
	}
}

// TestCrowdTargetsMedians checks that the crowd targets take the median
// over repeated runs, leave out the crowds with a seed, and name the
// striping-off figures.
func TestCrowdTargetsMedians(t *testing.T) {
	c := &CrowdResult{SiteBytes: 6 * mib}
	mesh := func(arrival string, seeds int, striping bool, copies, offload, done float64) CrowdRun {
		return CrowdRun{N: 50, Arrival: arrival, Seeds: seeds, Mesh: true, Striping: striping, Copies: copies, Offload: offload, CompletionP50: done}
	}
	for k, copies := range []float64{20, 1, 9} {
		c.Runs = append(c.Runs,
			mesh("100ms", 0, true, copies, 0.7, []float64{4000, 6000, 5000}[k]),
			mesh("100ms", 0, false, 30+copies, 0.5, 9000),
			mesh("100ms", 1, true, 0.1, 0.99, 100),
			CrowdRun{N: 50, Arrival: "100ms", CompletionP50: []float64{12000, 10000, 11000}[k], Copies: 50},
			mesh("poisson 10s", 0, true, 2, []float64{0.96, 0.93, 0.97}[k], 200))
	}
	got := map[string]Target{}
	for _, tg := range crowdTargets(c) {
		got[tg.Name] = tg
	}
	for name, want := range map[string]struct {
		figure float64
		met    bool
		note   string
	}{
		"crowd: 50 within 100ms, no seed: origin copies":            {9, false, "median of 3 runs: 20.00, 1.00, 9.00; striping off: median 39.00"},
		"crowd: 50 within 100ms, no seed: completion p50 ÷ no mesh": {5000.0 / 11000, true, "5000 ms vs 11000 ms"},
		"crowd: 50 poisson 10s, no seed: offload":                   {0.96, true, "0.960, 0.930, 0.970"},
	} {
		tg, ok := got[name]
		if !ok {
			t.Errorf("no target %q in %v", name, got)
			continue
		}
		if math.Abs(tg.Figure-want.figure) > 1e-9 || tg.Met != want.met || !strings.Contains(tg.Note, want.note) {
			t.Errorf("%s: figure %v met %v note %q; want %v, %v, a note with %q", name, tg.Figure, tg.Met, tg.Note, want.figure, want.met, want.note)
		}
	}
	if m := medianOf([]CrowdRun{{Copies: 1}, {Copies: 4}, {Copies: 2}, {Copies: 9}}, func(r CrowdRun) float64 { return r.Copies }); m != 3 {
		t.Errorf("median of 1, 4, 2, 9 = %v, want 3", m)
	}
}
