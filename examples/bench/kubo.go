package main

import (
	"bufio"
	"context"
	"fmt"
	"github.com/meshcdn/meshcdn/examples/bench/internal/node"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// kuboEnv names the Kubo binary the footprint scenario samples beside our
// nodes, as in the interop tests (bash .ci/kubo.sh builds one).
const kuboEnv = "MESHCDN_KUBO"

// kuboIdle starts `ipfs daemon` on a fresh repo with Kubo's test profile
// (loopback only, no bootstrap peers, no mDNS), lets it idle for idle and
// samples its /proc status, then stops it.
func kuboIdle(ctx context.Context, bin string, idle time.Duration) (Sample, error) {
	repo, err := os.MkdirTemp("", "meshcdn-bench-kubo-")
	if err != nil {
		return Sample{}, err
	}
	defer os.RemoveAll(repo)
	env := append(os.Environ(), "IPFS_PATH="+repo)
	initCmd := exec.CommandContext(ctx, bin, "init", "--profile", "test,unixfs-v1-2025")
	initCmd.Env = env
	if out, err := initCmd.CombinedOutput(); err != nil {
		return Sample{}, fmt.Errorf("ipfs init: %v: %s", err, out)
	}
	cmd := exec.CommandContext(ctx, bin, "daemon", "--enable-gc=false")
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Sample{}, err
	}
	if err := cmd.Start(); err != nil {
		return Sample{}, err
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		t := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
		cmd.Wait()
		t.Stop()
	}()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Daemon is ready") {
				ready <- true
				io.Copy(io.Discard, out)
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			return Sample{}, fmt.Errorf("ipfs daemon ended before it was ready")
		}
	case <-time.After(60 * time.Second):
		return Sample{}, fmt.Errorf("ipfs daemon not ready in 60 s")
	}
	start := time.Now()
	select {
	case <-time.After(idle):
	case <-ctx.Done():
		return Sample{}, ctx.Err()
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		return Sample{}, err
	}
	st := string(b)
	return Sample{Node: "kubo", Phase: "idle", At: time.Since(start).Seconds(),
		VmRSS: node.ProcField(st, "VmRSS"), VmHWM: node.ProcField(st, "VmHWM"), RssAnon: node.ProcField(st, "RssAnon"), RssFile: node.ProcField(st, "RssFile"),
		Goroutines: -1}, nil
}
