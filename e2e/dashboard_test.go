//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDashboardLive runs the demo, loads its dashboard in Chromium during
// the run and checks that the figures change between two readings.
func TestDashboardLive(t *testing.T) {
	demo := exec.Command("go", "run", "./examples/demo", "-peers", "12", "-arrival", "6s", "-hold", "5s")
	demo.Dir = ".."
	demo.Stderr = os.Stderr
	out, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		demo.Process.Kill()
		demo.Wait()
	}()
	sc := bufio.NewScanner(out)
	url := ""
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "dashboard: "); ok {
			url = u
			break
		}
	}
	if url == "" {
		t.Fatal("the demo printed no dashboard URL")
	}
	go func() { // keep the demo's stdout drained
		for sc.Scan() {
		}
	}()

	shot := os.Getenv("MESHCDN_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "dashboard.png")
	}
	start := time.Now()
	cmd := exec.Command("node", "dashboard.mjs", url, shot)
	cmd.Stderr = os.Stderr
	res, err := cmd.Output()
	if err != nil {
		t.Fatalf("node dashboard.mjs: %v", err)
	}
	var got struct {
		First, Second struct {
			Offload, Peer, Origin, Nodes string
			Rows                         int
		}
	}
	if err := json.Unmarshal(res, &got); err != nil {
		t.Fatalf("dashboard.mjs printed %q: %v", res, err)
	}
	t.Logf("after %v: first %+v, second %+v; screenshot %s", time.Since(start).Round(time.Millisecond), got.First, got.Second, shot)
	if got.First == got.Second {
		t.Errorf("the dashboard's figures did not change during the run: %+v", got.First)
	}
	if got.Second.Rows == 0 || got.Second.Nodes == "0" {
		t.Errorf("the dashboard shows no nodes: %+v", got.Second)
	}
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10_000 {
		t.Errorf("screenshot %s missing or empty: %v", shot, err)
	}
}
