package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// childMain is a footprint node in its own process: "seed" or "app".
// It prints its samples to stdout as JSON lines.
func childMain(args []string) int {
	logging.SetAllLoggers(logging.LevelFatal)
	role := args[0]
	if role == "office" {
		return officeChild(args[1:])
	}
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
		fmt.Fprintln(os.Stderr, "bench child:", err)
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
		fmt.Fprintln(os.Stderr, "bench child:", err)
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
		fmt.Fprintln(os.Stderr, "bench child:", role+":", err)
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
	b, _ := os.ReadFile("/proc/self/status")
	st := string(b)
	return Sample{Node: c.name, Phase: phase, At: time.Since(c.start).Seconds(),
		VmRSS: procField(st, "VmRSS"), VmHWM: procField(st, "VmHWM"), RssAnon: procField(st, "RssAnon"), RssFile: procField(st, "RssFile"),
		Goroutines: runtime.NumGoroutine()}
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
	a, _ := m.Lookup(footPath)
	if err := meshtest.WaitProvider(wctx, c.node, a.Cid); err != nil {
		return err
	}
	peak, err := c.fetch(ctx, m)
	if err != nil {
		return err
	}
	c.emit(peak)
	end := time.Now()
	s := c.sample(sinceStart(0))
	s.At = 0
	c.emit(s)
	step := min(5*time.Second, after)
	for t := step; step > 0 && t <= after; t += step {
		time.Sleep(time.Until(end.Add(t)))
		s = c.sample(sinceStart(t))
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
			errs <- c.readPaced(ctx, m, streamPath(i), pace)
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
		due := start.Add(time.Duration(float64(read) / (pace * mib) * float64(time.Second)))
		time.Sleep(time.Until(due))
	}
}

// streamPath names the i-th stream asset of the footprint site.
func streamPath(i int) string { return fmt.Sprintf("stream%d.bin", i) }

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
	r, _, err := c.node.OpenAsset(ctx, m, footPath)
	if err == nil {
		_, err = io.Copy(io.Discard, r)
		r.Close()
	}
	return peak(), err
}
