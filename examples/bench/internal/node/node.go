// Package node is the footprint scenario's node process: a seed or an app
// that samples its own /proc/self/status and prints the samples as JSON
// lines. It runs in a binary of its own (examples/bench/footnode), so that
// what is measured is meshcdn's footprint and not the benchmark program's
// (plotting libraries and all).
package node

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// Main runs a footprint node: args[0] is "seed" or "app", the rest its
// flags. It prints its samples to stdout as JSON lines and returns the
// process's exit code.
func Main(args []string) int {
	logging.SetAllLoggers(logging.LevelFatal)
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "bench node: seed or app?")
		return 2
	}
	role := args[0]
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	origin := fs.String("origin", "", "origin URL")
	boot := fs.String("boot", "", "seed address")
	idle := fs.Duration("idle", 30*time.Second, "idle time")
	after := fs.Duration("after", 60*time.Second, "watch time after the fetch")
	streams := fs.Int("streams", 0, "streams read at video pace after the watch")
	pace := fs.Float64("pace", 2, "each stream's pace in MiB/s")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	dir, err := os.MkdirTemp("", "meshcdn-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench node:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	cfg := mesh.Config{Name: "bench-foot", Role: mesh.Role(role), DataDir: dir, Origin: *origin}
	if *boot != "" {
		cfg.Bootstrap = []string{*boot}
	}
	n, err := mesh.New(ctx, meshtest.LocalConfig(cfg))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench node:", err)
		return 1
	}
	defer n.Close()
	c := &childRun{node: n, name: role, start: time.Now(), enc: json.NewEncoder(os.Stdout)}
	if role == "seed" {
		err = c.seed(ctx, *idle)
	} else {
		err = c.app(ctx, *idle, *after)
		if err == nil && *streams > 0 {
			err = c.streams(ctx, *streams, *pace)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench node:", role+":", err)
		return 1
	}
	return 0
}

type childRun struct {
	node  *mesh.Node
	name  string
	start time.Time
	mu    sync.Mutex
	enc   *json.Encoder
}

func (c *childRun) sample(phase string) Sample {
	s, _ := ReadStatus("/proc/self/status")
	s.Node, s.Phase, s.At, s.Goroutines = c.name, phase, time.Since(c.start).Seconds(), runtime.NumGoroutine()
	s.HeapObjects, s.HeapLive = readHeap()
	return s
}

func (c *childRun) emit(s Sample) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enc.Encode(s)
}

// seed pins the site, says where it listens, idles, then samples every 5 s
// until its stdin closes.
func (c *childRun) seed(ctx context.Context, idle time.Duration) error {
	m, err := c.node.LoadManifest(ctx, "manifest.json")
	if err != nil {
		return err
	}
	if err := c.node.Pin(ctx, m); err != nil {
		return err
	}
	c.emit(Sample{Node: "seed", Phase: "pinned", Addr: c.node.Addrs()[0].String()})
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	t0 := time.Now()
	select {
	case <-time.After(idle):
		c.emit(c.sample("idle"))
	case <-eof:
		return nil
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			c.emit(c.sample(fmt.Sprintf("t%.0fs", time.Since(t0).Seconds())))
		case <-eof:
			return nil
		}
	}
}

// app idles, fetches the asset from the seed sampling every 100 ms (the
// largest sample is "during"), then samples every 5 s (or after, if shorter) until after.
func (c *childRun) app(ctx context.Context, idle, after time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := c.node.WaitPeers(wctx, 1); err != nil {
		return err
	}
	time.Sleep(idle) // idle is what is measured
	c.emit(c.sample("idle"))
	m, err := c.node.LoadManifest(ctx, "manifest.json")
	if err != nil {
		return err
	}
	a, _ := m.Lookup(FootPath)
	if err := meshtest.WaitProvider(wctx, c.node, a.Cid); err != nil {
		return err
	}
	peak, err := c.fetch(ctx, m)
	if err != nil {
		return err
	}
	c.emit(peak)
	end := time.Now()
	s := c.sample(SinceStart(0))
	s.At = 0
	c.emit(s)
	step := min(5*time.Second, after)
	for t := step; step > 0 && t <= after; t += step {
		time.Sleep(time.Until(end.Add(t)))
		s = c.sample(SinceStart(t))
		s.At = t.Seconds()
		c.emit(s)
	}
	return nil
}

// streams reads n stream assets at once, each at pace MiB/s as a video
// player would, and emits the sample with the largest VmRSS meanwhile, as
// phase "streams".
func (c *childRun) streams(ctx context.Context, n int, pace float64) error {
	m, err := c.node.LoadManifest(ctx, "manifest.json")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	peak := c.watchPeak("streams")
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.readPaced(ctx, m, StreamPath(i), pace)
		}()
	}
	wg.Wait()
	c.emit(peak())
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// readPaced reads path through the node at pace MiB/s, 256 KiB at a time.
func (c *childRun) readPaced(ctx context.Context, m *manifest.Manifest, path string, pace float64) error {
	r, _, err := c.node.OpenAsset(ctx, m, path)
	if err != nil {
		return err
	}
	defer r.Close()
	const step = 256 << 10
	start := time.Now()
	buf := make([]byte, step)
	var read int64
	for {
		n, err := io.ReadFull(r, buf)
		read += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
		due := start.Add(time.Duration(float64(read) / (pace * (1 << 20)) * float64(time.Second)))
		time.Sleep(time.Until(due))
	}
}

// StreamPath names the i-th stream asset of the footprint site.
func StreamPath(i int) string { return fmt.Sprintf("stream%d.bin", i) }

// watchPeak samples every 100 ms until the returned func is called, which
// returns the sample with the largest VmRSS, as phase.
func (c *childRun) watchPeak(phase string) func() Sample {
	done := make(chan struct{})
	peak := make(chan Sample, 1)
	go func() {
		best := c.sample(phase)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				if s := c.sample(phase); s.VmRSS > best.VmRSS {
					best = s
				}
			case <-done:
				peak <- best
				return
			}
		}
	}()
	return func() Sample {
		close(done)
		return <-peak
	}
}

// fetch reads the asset through the node, sampling every 100 ms, and
// returns the sample with the largest VmRSS, as phase "during".
func (c *childRun) fetch(ctx context.Context, m *manifest.Manifest) (Sample, error) {
	peak := c.watchPeak("during")
	r, _, err := c.node.OpenAsset(ctx, m, FootPath)
	if err == nil {
		_, err = io.Copy(io.Discard, r)
		r.Close()
	}
	return peak(), err
}

// FootPath is the asset the app fetches whole.
const FootPath = "video.bin"

// SinceStart formats a phase name for the samples taken after the fetch.
func SinceStart(d time.Duration) string { return fmt.Sprintf("+%.0fs", d.Seconds()) }

// Sample is one reading of a node process's /proc status.
type Sample struct {
	Node       string  `json:"node"`
	Phase      string  `json:"phase"`
	At         float64 `json:"at_s"`
	VmRSS      int64   `json:"vm_rss"`
	VmHWM      int64   `json:"vm_hwm"`
	RssAnon    int64   `json:"rss_anon"`
	RssFile    int64   `json:"rss_file"`
	Goroutines int     `json:"goroutines"`
	// HeapObjects is the Go heap's objects, garbage included, and HeapLive
	// what was live at the last collection (runtime/metrics), in bytes.
	HeapObjects int64  `json:"heap_objects,omitempty"`
	HeapLive    int64  `json:"heap_live,omitempty"`
	Addr        string `json:"addr,omitempty"`
}

// readHeap reads the Go heap's objects and its live bytes at the last
// collection.
func readHeap() (objects, live int64) {
	m := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 || m[1].Value.Kind() != metrics.KindUint64 {
		return 0, 0
	}
	return int64(m[0].Value.Uint64()), int64(m[1].Value.Uint64())
}

// ReadStatus reads the memory fields of a /proc/<pid>/status file.
func ReadStatus(path string) (Sample, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Sample{}, err
	}
	st := string(b)
	return Sample{VmRSS: ProcField(st, "VmRSS"), VmHWM: ProcField(st, "VmHWM"),
		RssAnon: ProcField(st, "RssAnon"), RssFile: ProcField(st, "RssFile")}, nil
}

// ProcField returns a "Name: N kB" field of a /proc file in bytes (or the
// bare number for fields without a unit).
func ProcField(text, name string) int64 {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		if len(f) > 1 && f[1] == "kB" {
			n <<= 10
		}
		return n
	}
	return 0
}
