package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/meshcdn/meshcdn/examples/bench/internal/node"
	"github.com/meshcdn/meshcdn/meshtest"
)

// FootprintResult is the footprint scenario's part of the report.
type FootprintResult struct {
	FetchBytes    int64    `json:"fetch_bytes"`
	Samples       []Sample `json:"samples"`
	AppBackUnder  float64  `json:"app_back_under_50mib_s"`
	AfterSeconds  float64  `json:"after_seconds"`
	IdleSeconds   float64  `json:"idle_seconds"`
	AppIdleRSS    int64    `json:"-"`
	AppFinalRSS   int64    `json:"-"`
	SeedIdleAnon  int64    `json:"-"`
	SeedIdleFound bool     `json:"-"`
	// Streams read StreamBytes each at once, at PaceMiBps, after the
	// watch; StreamsAnonDelta is the app's peak RssAnon meanwhile less its
	// RssAnon before them.
	Streams          int     `json:"streams"`
	StreamBytes      int64   `json:"stream_bytes"`
	PaceMiBps        float64 `json:"pace_mibps"`
	StreamsAnonDelta int64   `json:"streams_rss_anon_delta"`
	// Kubo is an idle Kubo daemon's sample beside ours, when MESHCDN_KUBO
	// names one; KuboSkipped says why not otherwise.
	Kubo        *Sample `json:"kubo,omitempty"`
	KuboSkipped string  `json:"kubo_skipped,omitempty"`
}

// Sample is one reading of a node process's /proc status.
type Sample = node.Sample

// runFootprint runs a seed and then an app, each in a process of its own
// (the footnode binary, built here), so that /proc/self/status is theirs
// alone.
func runFootprint(ctx context.Context, o options, p *progress) (*FootprintResult, error) {
	exe, cleanup, how := footnodeBinary(ctx)
	defer cleanup()
	p.step("footprint: nodes run %s", how)
	size := int64(o.footMiB) * mib
	files := map[string]int64{node.FootPath: size}
	for i := range o.footStreams {
		files[node.StreamPath(i)] = int64(o.footStreamMiB) * mib
	}
	org, err := meshtest.NewOrigin(meshtest.OriginConfig{Site: meshtest.GenerateSite(o.seed, files)})
	if err != nil {
		return nil, err
	}
	defer org.Close()
	res := &FootprintResult{FetchBytes: size, AppBackUnder: -1, AfterSeconds: o.footAfter.Seconds(), IdleSeconds: o.footIdle.Seconds(),
		Streams: o.footStreams, StreamBytes: int64(o.footStreamMiB) * mib, PaceMiBps: o.footPace}
	kubo := startKuboIdle(ctx, o.footIdle, res)
	defer kubo()
	common := []string{"-origin", org.URL(), "-idle", o.footIdle.String(), "-after", o.footAfter.String()}
	seed, seedOut, err := startChild(ctx, exe, append([]string{"seed"}, common...))
	if err != nil {
		return nil, err
	}
	defer seed.Wait()
	defer seed.stdin.Close()
	first, err := nextSample(seedOut)
	if err != nil || first.Addr == "" {
		return nil, fmt.Errorf("seed: no address (%v)", err)
	}
	p.step("footprint: seed pinned %d MiB; app starting, idle for %v", o.footMiB, o.footIdle)
	app, appOut, err := startChild(ctx, exe, append([]string{"app", "-boot", first.Addr,
		"-streams", fmt.Sprint(o.footStreams), "-pace", fmt.Sprint(o.footPace)}, common...))
	if err != nil {
		return nil, err
	}
	seedDone := make(chan []Sample, 1)
	go func() { seedDone <- collect(seedOut, nil, nil) }()
	appSamples := collect(appOut, p, res)
	if err := app.Wait(); err != nil {
		return nil, fmt.Errorf("app process: %w", err)
	}
	seed.stdin.Close()
	res.Samples = append(<-seedDone, appSamples...)
	var lastAnon int64
	for _, s := range res.Samples {
		switch {
		case s.Node == "seed" && s.Phase == "idle":
			res.SeedIdleAnon, res.SeedIdleFound = s.RssAnon, true
		case s.Node == "app" && s.Phase == "streams":
			res.StreamsAnonDelta = s.RssAnon - lastAnon
		case s.Node == "app":
			lastAnon = s.RssAnon
		}
	}
	if len(appSamples) == 0 {
		return res, errors.New("app: no samples")
	}
	return res, nil
}

// footprintNodePkg is the footnode command, built for the footprint
// scenario.
const footprintNodePkg = "github.com/meshcdn/meshcdn/examples/bench/footnode"

// footnodeBinary builds the footnode command into a temporary directory
// and returns how to run it; without a Go toolchain it falls back to this
// program with -child (which carries the benchmark's plotting libraries,
// a few MiB more resident), saying so.
func footnodeBinary(ctx context.Context) (exe []string, cleanup func(), how string) {
	self, err := os.Executable()
	fallback := []string{self, "-child"}
	if err != nil {
		return fallback, func() {}, "in this program (" + err.Error() + ")"
	}
	dir, err := os.MkdirTemp("", "meshcdn-bench-node-")
	if err != nil {
		return fallback, func() {}, "in this program (" + err.Error() + ")"
	}
	bin := filepath.Join(dir, "footnode")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, footprintNodePkg).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return fallback, func() {}, fmt.Sprintf("in this program (go build %s: %v: %s)", footprintNodePkg, err, bytes.TrimSpace(out))
	}
	return []string{bin}, func() { os.RemoveAll(dir) }, "in the footnode binary (" + footprintNodePkg + ")"
}

// startKuboIdle samples an idle Kubo daemon beside the nodes when
// MESHCDN_KUBO names one, into res; the returned func waits for it.
func startKuboIdle(ctx context.Context, idle time.Duration, res *FootprintResult) func() {
	bin := os.Getenv(kuboEnv)
	if bin == "" {
		res.KuboSkipped = kuboEnv + " not set"
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s, err := kuboIdle(ctx, bin, idle)
		if err != nil {
			res.KuboSkipped = err.Error()
			return
		}
		res.Kubo = &s
	}()
	return func() { <-done }
}

// collect reads samples until EOF, noting the app's figures in res.
func collect(r *bufio.Scanner, p *progress, res *FootprintResult) []Sample {
	var out []Sample
	for {
		s, err := nextSample(r)
		if err != nil {
			return out
		}
		out = append(out, s)
		if p == nil {
			continue
		}
		p.step("footprint: %s %-10s VmRSS %5.1f MiB, VmHWM %5.1f, RssAnon %5.1f, RssFile %5.1f, Go heap %5.1f (live %5.1f), %d goroutines",
			s.Node, s.Phase, float64(s.VmRSS)/mib, float64(s.VmHWM)/mib, float64(s.RssAnon)/mib, float64(s.RssFile)/mib,
			float64(s.HeapObjects)/mib, float64(s.HeapLive)/mib, s.Goroutines)
		switch {
		case s.Phase == "idle":
			res.AppIdleRSS = s.VmRSS
		case s.Phase[0] == '+':
			res.AppFinalRSS = s.VmRSS
			if res.AppBackUnder < 0 && s.VmRSS < 50*mib {
				res.AppBackUnder = s.At
			}
		}
	}
}

type child struct {
	*exec.Cmd
	stdin io.WriteCloser
}

// startChild runs exe (the footnode binary, or this program with -child)
// with args.
func startChild(ctx context.Context, exe []string, args []string) (*child, *bufio.Scanner, error) {
	cmd := exec.CommandContext(ctx, exe[0], append(exe[1:], args...)...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	return &child{cmd, in}, bufio.NewScanner(out), nil
}

func nextSample(sc *bufio.Scanner) (Sample, error) {
	var s Sample
	if !sc.Scan() {
		if sc.Err() != nil {
			return s, sc.Err()
		}
		return s, io.EOF
	}
	return s, json.Unmarshal(sc.Bytes(), &s)
}
