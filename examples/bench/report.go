package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"time"
)

// Report is the JSON report; see the package doc for its schema.
type Report struct {
	Schema     int               `json:"schema"`
	Command    string            `json:"command"`
	Date       string            `json:"date"`
	Machine    Machine           `json:"machine"`
	Seconds    float64           `json:"seconds"`
	Crowd      *CrowdResult      `json:"crowd,omitempty"`
	LongTail   *LongTailResult   `json:"longtail,omitempty"`
	Throughput *ThroughputResult `json:"throughput,omitempty"`
	Footprint  *FootprintResult  `json:"footprint,omitempty"`
	Scale      *ScaleResult      `json:"scale,omitempty"`
	Office     *OfficeResult     `json:"office,omitempty"`
	Targets    []Target          `json:"targets"`
	Plots      []string          `json:"plots,omitempty"`
	Errors     []string          `json:"errors,omitempty"`
}

// Machine describes where the bench ran.
type Machine struct {
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memory_bytes"`
	Go          string `json:"go"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	Kernel      string `json:"kernel"`
}

// Target is one target of the benchmark issue beside its figure.
type Target struct {
	Name   string  `json:"name"`
	Figure float64 `json:"figure"`
	Op     string  `json:"op"`
	Target float64 `json:"target"`
	Unit   string  `json:"unit"`
	Met    bool    `json:"met"`
	By     string  `json:"by"`
	Note   string  `json:"note,omitempty"`
}

// check makes a Target from a figure, its op ("<=" or ">=") and bound.
func check(name string, figure float64, op string, bound float64, unit, note string) Target {
	t := Target{Name: name, Figure: figure, Op: op, Target: bound, Unit: unit, Note: note}
	switch op {
	case "<=":
		t.Met = figure <= bound
	case ">=":
		t.Met = figure >= bound
	}
	if op == "report" {
		t.By = "no bound: reported"
		return t
	}
	diff := math.Abs(figure - bound)
	if t.Met {
		t.By = "met with " + num(diff) + " " + unit + " to spare"
	} else {
		t.By = "missed by " + num(diff) + " " + unit
		if bound != 0 && figure != 0 {
			t.By += fmt.Sprintf(" (%.2f× the target)", figure/bound)
		}
	}
	return t
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', 3, 64) }

func printTargets(w io.Writer, ts []Target) {
	fmt.Fprintln(w, "\ntargets (benchmark issue, must-show 2):")
	for _, t := range ts {
		state := "MISSED"
		if t.Met {
			state = "met"
		}
		if t.Op == "report" {
			state = "reported"
			fmt.Fprintf(w, "  %-58s %10s %-8s %s\n", t.Name, num(t.Figure), t.Unit, state)
		} else {
			fmt.Fprintf(w, "  %-58s %10s %s %-6s %-8s %-8s %s\n", t.Name, num(t.Figure), t.Op, num(t.Target), t.Unit, state, t.By)
		}
		if t.Note != "" {
			fmt.Fprintf(w, "  %-58s   (%s)\n", "", t.Note)
		}
	}
}

// progress prints a line per step to stderr, with the time since start.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) step(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func msAll(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = ms(d)
	}
	return out
}

const mib = 1 << 20
