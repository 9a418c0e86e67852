package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

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
}

// Sample is one reading of a node process's /proc/self/status.
type Sample struct {
	Node       string  `json:"node"`
	Phase      string  `json:"phase"`
	At         float64 `json:"at_s"`
	VmRSS      int64   `json:"vm_rss"`
	VmHWM      int64   `json:"vm_hwm"`
	RssAnon    int64   `json:"rss_anon"`
	RssFile    int64   `json:"rss_file"`
	Goroutines int     `json:"goroutines"`
	Addr       string  `json:"addr,omitempty"`
}

const footPath = "video.bin"

// runFootprint runs a seed and then an app, each in a process of its own
// (this program with -child), so that /proc/self/status is theirs alone.
func runFootprint(ctx context.Context, o options, p *progress) (*FootprintResult, error) {
	size := int64(o.footMiB) * mib
	org, err := meshtest.NewOrigin(meshtest.OriginConfig{Site: meshtest.GenerateSite(o.seed, map[string]int64{footPath: size})})
	if err != nil {
		return nil, err
	}
	defer org.Close()
	res := &FootprintResult{FetchBytes: size, AppBackUnder: -1, AfterSeconds: o.footAfter.Seconds(), IdleSeconds: o.footIdle.Seconds()}
	common := []string{"-origin", org.URL(), "-idle", o.footIdle.String(), "-after", o.footAfter.String()}
	seed, seedOut, err := startChild(ctx, append([]string{"seed"}, common...))
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
	app, appOut, err := startChild(ctx, append([]string{"app", "-boot", first.Addr}, common...))
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
	for _, s := range res.Samples {
		if s.Node == "seed" && s.Phase == "idle" {
			res.SeedIdleAnon, res.SeedIdleFound = s.RssAnon, true
		}
	}
	if len(appSamples) == 0 {
		return res, errors.New("app: no samples")
	}
	return res, nil
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
		p.step("footprint: %s %-10s VmRSS %5.1f MiB, VmHWM %5.1f, RssAnon %5.1f, RssFile %5.1f, %d goroutines",
			s.Node, s.Phase, float64(s.VmRSS)/mib, float64(s.VmHWM)/mib, float64(s.RssAnon)/mib, float64(s.RssFile)/mib, s.Goroutines)
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

func startChild(ctx context.Context, args []string) (*child, *bufio.Scanner, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"-child"}, args...)...)
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

// sinceStart formats a phase name for the samples taken after the fetch.
func sinceStart(d time.Duration) string { return fmt.Sprintf("+%.0fs", d.Seconds()) }
