package main

import (
	"math"
	"testing"
)

// TestPeerOfCeilingIgnoresLoad pins what the throughput target compares:
// the same peer fetch (the same CPU per GiB) on a quiet machine and with
// other jobs leaving it a tenth of the cores gets the same figure by CPU,
// while its wall-clock ratio to the ceiling (which assumes every core free)
// drops tenfold. The 2026-11-30 report had 0.05 by wall clock, 0.47 by CPU.
func TestPeerOfCeilingIgnoresLoad(t *testing.T) {
	const cores = 2
	c := Ceiling{CPUPerGiB: 2.2}
	c.MiBps = cores / c.CPUPerGiB * 1024
	run := func(coresUsed float64) ThroughputRun {
		r := ThroughputRun{Name: "peer-tcp", CPUPerGiB: 4.7, Cores: coresUsed}
		r.MiBps = coresUsed / r.CPUPerGiB * 1024
		return r
	}
	quiet, loaded := run(cores), run(cores/10.)
	qCPU, qWall := ofCeiling(quiet, c)
	lCPU, lWall := ofCeiling(loaded, c)
	if math.Abs(qCPU-2.2/4.7) > 1e-9 || qCPU != lCPU {
		t.Errorf("by CPU: quiet %.3f, loaded %.3f; want both %.3f", qCPU, lCPU, 2.2/4.7)
	}
	if math.Abs(qWall-qCPU) > 1e-9 || math.Abs(lWall-qWall/10) > 1e-9 {
		t.Errorf("by wall clock: quiet %.3f, loaded %.3f; want %.3f and a tenth of it", qWall, lWall, qCPU)
	}

	res := &ThroughputResult{Cores: cores, Ceiling: c, Runs: []ThroughputRun{{Name: "http-get", Cores: 0.3}, {Name: "origin"}, loaded, {Name: "peer-quic"}}}
	res.PeerOfCeiling, res.PeerOfCeilingWall = ofCeiling(loaded, c)
	ts := targets(&Report{Throughput: res})
	if len(ts) != 1 || ts[0].Figure != lCPU {
		t.Fatalf("targets = %+v, want the throughput target at %.3f (by CPU)", ts, lCPU)
	}
}
