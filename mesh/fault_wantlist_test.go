//go:build fault

package mesh_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// msgCounter is a slog.Handler that counts the records with one message,
// by the value of their "peer" attribute.
type msgCounter struct {
	msg string
	mu  sync.Mutex
	by  map[string]int
}

func (c *msgCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *msgCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *msgCounter) WithGroup(string) slog.Handler            { return c }
func (c *msgCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message != c.msg {
		return nil
	}
	var p string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "peer" {
			p = a.Value.String()
		}
		return true
	})
	c.mu.Lock()
	c.by[p]++
	c.mu.Unlock()
	return nil
}

// total returns how many records were counted.
func (c *msgCounter) total() (n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.by {
		n += k
	}
	return n
}

// counts returns how many peers were counted and the most records of one.
func (c *msgCounter) counts() (peers, most int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.by {
		most = max(most, n)
	}
	return len(c.by), most
}

// wantFlood has each of the attacker hosts hs, connected to n, send it
// the want list message raw 20 times a second until ctx ends, each on a
// new bitswap stream, for as long as it is connected: it does not dial
// again once n has closed the connection (go-libp2p's resource manager
// admits 0.2 new connections a second per IPv4 address after a burst of
// 16, and exempts loopback, where these attackers are). It counts the
// lists written whole in sent and the attempts refused (stream refused or
// reset, or no connection) in refused; the goroutines are counted in wg.
func wantFlood(ctx context.Context, hs []host.Host, n *mesh.Node, raw []byte, wg *sync.WaitGroup, sent, refused *atomic.Int64) {
	for _, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				s, err := h.NewStream(network.WithNoDial(ctx, "flood"), n.ID(), bitswapProtocols...)
				if err == nil {
					_, err = s.Write(raw)
					s.Reset()
				}
				if err != nil {
					refused.Add(1)
				} else {
					sent.Add(1)
				}
			}
		}()
	}
}

// medianFetch fetches path on three fresh apps in turn and returns the
// median time; each fetch is checked as checkHonest does.
func (b *nhBed) medianFetch(ctx context.Context, t *testing.T, path string) time.Duration {
	t.Helper()
	var ds []time.Duration
	for range 3 {
		app := b.newApp(ctx, t)
		d, st, err := b.fetch(ctx, app, path)
		if err != nil {
			t.Fatalf("honest fetch under the flood (app %s): %v", app.ID(), err)
		}
		b.checkHonest(t, app, st)
		t.Logf("honest fetch: %v", d)
		ds = append(ds, d)
		app.Close()
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[1]
}

// TestFaultLargeWantlists replays attack 4 of issue 11: 60 connections
// resending 2 MB want lists (45,000 entries each), 20 a second each. boxo
// decoded each whole: such connections took a seed from 136 MiB to
// 1.75 GiB and the honest fetch to 23x. Then a want list over 128 KiB
// (about 2,900 entries, where boxo keeps at most 1024 per peer) reset its
// stream before boxo decoded it, but boxo had allocated the message's
// 2 MB on reading its length, and the peer kept its connection and sent
// the next list at once: 8 such attackers held the honest fetch at 2.2-5x
// its baseline, and these 60 grew the live heap by 256 MiB and stalled the
// honest fetch (no block for 5 s). Now boxo is handed nothing of a refused
// list, and its peer is disconnected and its bitswap streams are reset
// unread for a minute (fetch's refuseFor). The test checks the mechanism:
// no list is taken whole, each attacker's is read (and logged "bitswap
// message refused") once in the whole flood, the live heap stays within
// 32 MiB of where it was; and three honest fetches of new apps beside the
// flood complete, all from the seed, none penalising it. Their median is
// logged against the median of three before the flood, with the CPU time
// the process spent on each; on a 2-core machine shared with other builds
// the wall-clock ratio is noise, so the bound asserted (4x, or 3 s more) is
// loose. The attackers do not dial again once disconnected: see wantFlood.
func TestFaultLargeWantlists(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	refusals := &msgCounter{msg: "bitswap message refused", by: map[string]int{}}
	b := newBed(t, 1, func(c *mesh.Config) { c.Logger = slog.New(refusals) })
	cpu0 := meshtest.CPUTime()
	base := b.medianFetch(ctx, t, "a0.bin")
	baseCPU := meshtest.CPUTime() - cpu0

	m := bsmsg.New(true)
	for i := range 45_000 {
		h, _ := mh.Sum([]byte(fmt.Sprint("want", i)), mh.SHA2_256, -1)
		m.AddEntry(cid.NewCidV1(cid.Raw, h), 1, bspb.Message_Wantlist_Block, true)
	}
	var raw bytes.Buffer // encoded once: the attackers' own CPU is not the point
	if err := m.ToNetV1(&raw); err != nil {
		t.Fatal(err)
	}
	t.Logf("want list message: %d bytes", raw.Len())
	attackCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	const attackers = 60
	hs := make([]host.Host, attackers)
	for i := range hs {
		hs[i] = attacker(t)
		connectTo(ctx, t, hs[i], b.seed)
	}
	heap0 := liveHeapMiB() // the attackers' hosts included
	var sent, refused atomic.Int64
	wantFlood(attackCtx, hs, b.seed, raw.Bytes(), &wg, &sent, &refused)
	for refused.Load() < 20*attackers { // the flood has run for a second
		if ctx.Err() != nil {
			t.Fatalf("the flood never got going: %d lists refused", refused.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	heap1 := liveHeapMiB() // before the honest apps, which the test keeps till it ends
	t.Logf("live heap: %.0f MiB before the flood, %.0f MiB a second into it", heap0, heap1)
	if heap1-heap0 > 32 {
		t.Errorf("live heap grew by %.0f MiB, want at most 32", heap1-heap0)
	}

	cpu1 := meshtest.CPUTime()
	d := b.medianFetch(ctx, t, "a0.bin")
	floodCPU := meshtest.CPUTime() - cpu1
	stop()
	wg.Wait()
	t.Logf("attackers: %d want lists sent whole, %d refused", sent.Load(), refused.Load())
	t.Logf("honest fetch (median of 3): baseline %v (%v CPU for 3), under the flood %v (%v CPU for 3, attackers' included): %.1fx",
		base, baseCPU, d, floodCPU, float64(d)/float64(base))
	peers, most := refusals.counts()
	t.Logf("seed: want lists of %d attackers read and refused, at most %d of one", peers, most)
	if sent.Load() > 0 {
		t.Errorf("%d want lists of 2 MB were taken whole", sent.Load())
	}
	if peers != attackers || most != 1 {
		t.Errorf("the seed read and refused the lists of %d attackers, up to %d of one; want each attacker's once (then it is refused unread)", peers, most)
	}
	if limit := max(4*base, base+3*time.Second); d > limit {
		t.Errorf("honest fetch under the flood took %v, want at most %v", d, limit)
	}
}
