package announce

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// meshOf30 starts n nodes on mocknet, connected in a ring plus three random
// chords per node (mean degree about 8), and waits until the gossipsub mesh
// has formed.
func meshOf30(b *testing.B, n int, latency time.Duration, cfg func(*Config)) []*tnode {
	return meshOf(b, n, false, latency, cfg)
}

// meshOf is meshOf30 on mocknet, or with tcp on real libp2p hosts on
// 127.0.0.1 (TCP, Noise, yamux).
func meshOf(b *testing.B, n int, tcp bool, latency time.Duration, cfg func(*Config)) []*tnode {
	tn := newTestNet(b)
	tn.mn.SetLinkDefaults(mocknet.LinkOptions{Latency: latency})
	nodes := make([]*tnode, n)
	for i := range nodes {
		if !tcp {
			nodes[i] = tn.node(nodeOpts{quota: 64 << 20, cfg: cfg})
			continue
		}
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close() })
		nodes[i] = tn.start(&tnode{h: h}, nodeOpts{quota: 64 << 20, cfg: cfg})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	degree := make([]int, n)
	linked := map[[2]int]bool{}
	link := func(i, j int) {
		if i == j || linked[[2]int{i, j}] || linked[[2]int{j, i}] {
			return
		}
		linked[[2]int{i, j}] = true
		degree[i]++
		degree[j]++
		if !tcp {
			tn.connect(nodes[i], nodes[j])
			return
		}
		hj := nodes[j].h
		if err := nodes[i].h.Connect(context.Background(), peer.AddrInfo{ID: hj.ID(), Addrs: hj.Addrs()}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range nodes {
		link(i, (i+1)%n)
		for range 3 {
			link(i, rng.IntN(n))
		}
	}
	for i, nd := range nodes {
		awaitTopicPeers(b, degree[i], nd)
	}
	awaitMesh(b, nodes, func(i int) int { return min(degree[i], 4) })
	return nodes
}

type arrival struct {
	node int
	root cid.Cid
	at   time.Time
}

// BenchmarkConvergence30 measures how long a HAVE takes to reach the
// provider table of every other peer of a 30-peer mesh: one peer imports
// 1 KiB, the clock runs until the 29 others list it. 20 trials, the origin
// rotating; reports the median and p95, and the pubsub bytes each peer sent
// per announcement (the trials run back to back, so a rate per second here
// would only say how fast they ran). On mocknet without and with 5 ms of
// link latency, and on real hosts over TCP on 127.0.0.1.
//
//	go test -run '^$' -bench Convergence30 -benchtime 1x ./announce/
func BenchmarkConvergence30(b *testing.B) {
	for _, lat := range []time.Duration{0, 5 * time.Millisecond} {
		b.Run(fmt.Sprintf("mocknet/latency=%v", lat), func(b *testing.B) {
			benchConvergence(b, false, lat)
		})
	}
	b.Run("tcp-loopback", func(b *testing.B) { benchConvergence(b, true, 0) })
}

func benchConvergence(b *testing.B, tcp bool, latency time.Duration) {
	const peers, trials = 30, 20
	nodes := meshOf(b, peers, tcp, latency, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	arrivals := make(chan arrival, 4096)
	for i, nd := range nodes {
		sub := nd.a.Table().Subscribe(ctx)
		go func() {
			for ch := range sub {
				if ch.Added && ch.Source == FromGossip {
					arrivals <- arrival{i, ch.Root, time.Now()}
				}
			}
		}()
	}
	var sent0 uint64
	for _, nd := range nodes {
		sent0 += nd.tr.sent.Load()
	}
	b.ResetTimer()
	start := time.Now()
	var times []time.Duration
	for range b.N {
		for trial := range trials {
			origin := trial % peers
			t0 := time.Now()
			root := importSeed(b, nodes[origin], uint64(1000+trial+len(times)), 1024)
			got := map[int]bool{}
			var last time.Time
			timeout := time.After(10 * time.Second)
			for len(got) < peers-1 {
				select {
				case a := <-arrivals:
					if a.root == root && a.node != origin && !got[a.node] {
						got[a.node] = true
						last = a.at
					}
				case <-timeout:
					b.Fatalf("trial %d: %d of %d peers learned the root within 10 s", trial, len(got), peers-1)
				}
			}
			times = append(times, last.Sub(t0))
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	var sent uint64
	for _, nd := range nodes {
		sent += nd.tr.sent.Load()
	}
	slices.Sort(times)
	median := times[len(times)/2]
	p95 := times[(len(times)*95+99)/100-1]
	b.ReportMetric(float64(median.Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(p95.Microseconds())/1000, "ms-p95")
	b.ReportMetric(float64(times[len(times)-1].Microseconds())/1000, "ms-max")
	perHave := float64(sent-sent0) / peers / float64(len(times))
	b.ReportMetric(perHave, "B-sent/peer/HAVE")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d peers (tcp %v), %d trials in %v, latency %v: median %v, p95 %v, max %v; %.0f pubsub bytes sent per peer per one-root HAVE (as many received)",
		peers, tcp, len(times), elapsed.Round(time.Millisecond), latency, median, p95, times[len(times)-1], perHave)
}

// BenchmarkTraffic30 measures the announce topic's pubsub bytes per peer per
// second in a 30-peer mesh of real hosts on 127.0.0.1 (Ed25519 keys, as in
// production: the signing key is inlined in the peer ID, not sent with every
// message) where every peer holds 20 roots: idle (only
// heartbeats and gossip control), and with a summary every 2 s, from which
// the cost at the default 1 min follows (see the package documentation).
//
//	go test -run '^$' -bench Traffic30 -benchtime 1x ./announce/
func BenchmarkTraffic30(b *testing.B) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{{"idle", time.Hour}, {"summary=2s", 2 * time.Second}} {
		b.Run(tc.name, func(b *testing.B) {
			const peers, roots = 30, 20
			nodes := meshOf(b, peers, true, 0, func(c *Config) { c.SummaryInterval = tc.interval })
			for i, nd := range nodes {
				for j := range roots {
					importSeed(b, nd, uint64(10_000+i*roots+j), 512)
				}
			}
			// Let the HAVEs of the imports pass and leave gossipsub's
			// message cache (5 heartbeats, 3.5 s), then measure a window.
			time.Sleep(4 * time.Second) // settling, not synchronisation: nothing to await
			var sent0, pub0, sum0 uint64
			for _, nd := range nodes {
				sent0 += nd.tr.sent.Load()
				pub0 += nd.a.Stats().PublishedBytes
				sum0 += nd.a.Stats().Summaries
			}
			b.ResetTimer()
			const window = 10 * time.Second
			time.Sleep(window) // the measurement window
			b.StopTimer()
			var sent, pub, sum uint64
			for _, nd := range nodes {
				sent += nd.tr.sent.Load()
				pub += nd.a.Stats().PublishedBytes
				sum += nd.a.Stats().Summaries
			}
			perPeer := float64(sent-sent0) / peers / window.Seconds()
			b.ReportMetric(perPeer, "B/s-sent/peer")
			b.ReportMetric(float64(pub-pub0)/peers/window.Seconds(), "B/s-payload/peer")
			b.ReportMetric(float64(sum-sum0)/peers, "summaries/peer")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s: %.0f B/s pubsub sent per peer (as many received), %.1f B/s own payload, %d summaries in %v",
				tc.name, perPeer, float64(pub-pub0)/peers/window.Seconds(), sum-sum0, window)
		})
	}
}

// BenchmarkTableMemory measures the heap a full table takes: 100,000
// entries, 1,000 peers × 100 roots.
//
//	go test -run '^$' -bench TableMemory -benchtime 1x ./announce/
func BenchmarkTableMemory(b *testing.B) {
	const peers, roots = 1000, 100
	rs := manyCids(b, "mem", roots*10)
	ps := make([]peer.ID, peers)
	for i := range ps {
		ps[i] = peer.ID(fmt.Sprintf("peer-%038d", i)) // as long as a real ID
	}
	var before, after runtime.MemStats
	for range b.N {
		runtime.GC()
		runtime.ReadMemStats(&before)
		tb := NewTable(TableConfig{})
		for i, p := range ps {
			off := (i * 7) % (len(rs) - roots)
			tb.Add(p, time.Hour, rs[off:off+roots]...)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		n := tb.Len()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "B/entry")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
		start := time.Now()
		tb.Sweep()
		b.ReportMetric(float64(time.Since(start).Microseconds()), "µs/sweep")
		tb.Close()
	}
}

// BenchmarkTableMemorySybils is BenchmarkTableMemory for a sybil flood:
// 100,000 entries of distinct roots, 442 per key (one HAVE message each),
// where the table costs the most per entry.
func BenchmarkTableMemorySybils(b *testing.B) {
	const perKey = 442
	rs := manyCids(b, "sybil", DefaultMaxEntries)
	var before, after runtime.MemStats
	for range b.N {
		runtime.GC()
		runtime.ReadMemStats(&before)
		tb := NewTable(TableConfig{MaxEntriesPerPeer: perKey})
		for i := 0; i < len(rs); i += perKey {
			p := peer.ID(fmt.Sprintf("sybil-%036d", i)) // as long as a real ID
			tb.Add(p, time.Hour, rs[i:min(i+perKey, len(rs))]...)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		n := tb.Len()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "B/entry")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
		tb.Close()
	}
}
