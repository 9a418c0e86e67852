package announce

import (
	"context"
	"github.com/ipfs/go-cid"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// BenchmarkFetchCrowd50 measures how soon the nodes of a cold flash crowd
// learn that the others are fetching the same root: 50 nodes on real hosts
// over TCP on 127.0.0.1 start within 100 ms (evenly spread), each dials 3
// random nodes started before it (as meshtest's crowd and mDNS do) and
// calls Fetching at once, as a fetch that finds no provider does. It
// reports the p50, p95 and largest time from an author's Fetching call to
// another node listing it in Table.Fetchers, over all 50 × 49 pairs, the
// share of pairs within 500 ms, and the time from the first node's start
// until every node lists all 49 others.
//
//	go test -run '^$' -bench FetchCrowd50 -benchtime 1x ./announce/
func BenchmarkFetchCrowd50(b *testing.B) {
	for range b.N {
		benchFetchCrowd(b, 50, 100*time.Millisecond)
	}
}

func benchFetchCrowd(b *testing.B, n int, spread time.Duration) {
	nodes := make([]*tnode, n)
	for i := range nodes {
		nodes[i] = loopbackNode(b, false)
	}
	root := rootOf("the crowd's site")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type seen struct {
		author peer.ID
		at     time.Time
	}
	learned := make([][]seen, n)
	var wg sync.WaitGroup
	for i, nd := range nodes {
		sub := nd.a.Table().Subscribe(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ch := range sub {
				if ch.Added && ch.Fetching && ch.Root == root {
					learned[i] = append(learned[i], seen{ch.Peer, time.Now()})
				}
			}
		}()
	}
	called := make([]time.Time, n)
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	var starts sync.WaitGroup
	for i := range nodes {
		time.Sleep(time.Until(start.Add(spread * time.Duration(i) / time.Duration(n))))
		earlier := rng.Perm(max(i, 1))[:min(i, 3)]
		starts.Add(1)
		go func() {
			defer starts.Done()
			for _, j := range earlier {
				hj := nodes[j].h
				if err := nodes[i].h.Connect(ctx, peer.AddrInfo{ID: hj.ID(), Addrs: hj.Addrs()}); err != nil {
					b.Error(err)
				}
			}
			called[i] = time.Now()
			if err := nodes[i].a.Fetching(ctx, root); err != nil {
				b.Error(err)
			}
		}()
	}
	starts.Wait()
	all := awaitAllFetchers(b, nodes, root, n-1, 30*time.Second)
	cancel()
	wg.Wait()
	idx := make(map[peer.ID]int, n)
	for i, nd := range nodes {
		idx[nd.h.ID()] = i
	}
	var lat []time.Duration
	for _, ss := range learned {
		for _, s := range ss {
			lat = append(lat, s.at.Sub(called[idx[s.author]]))
		}
	}
	slices.Sort(lat)
	within := 0
	for _, d := range lat {
		if d <= 500*time.Millisecond {
			within++
		}
	}
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Milliseconds()) }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	b.ReportMetric(pct(1), "max-ms")
	b.ReportMetric(float64(within)/float64(n*(n-1)), "within-500ms")
	b.ReportMetric(float64(all.Sub(start).Milliseconds()), "all-know-all-ms")
	b.Logf("%d pairs learned (of %d); all knew all %v after the first start", len(lat), n*(n-1), all.Sub(start))
}

// awaitAllFetchers polls until every node lists want fetchers of root and
// returns when that was.
func awaitAllFetchers(b *testing.B, nodes []*tnode, root cid.Cid, want int, within time.Duration) time.Time {
	deadline := time.Now().Add(within)
	for {
		done := true
		for _, nd := range nodes {
			if len(nd.a.Table().Fetchers(root)) < want {
				done = false
				break
			}
		}
		if done {
			return time.Now()
		}
		if time.Now().After(deadline) {
			short := 0
			for _, nd := range nodes {
				if len(nd.a.Table().Fetchers(root)) < want {
					short++
				}
			}
			b.Fatalf("after %v, %d of %d nodes list fewer than %d fetchers", within, short, len(nodes), want)
		}
		time.Sleep(time.Millisecond)
	}
}
