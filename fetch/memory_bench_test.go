package fetch_test

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// memProfileDir, if set, is where BenchmarkFetchMemory writes heap
// profiles: NAME-idle.pprof before each fetch and NAME.pprof at its peak of
// live heap, to compare with go tool pprof -diff_base, and beside each the
// goroutines at that moment (NAME.goroutines): where blocks wait.
var memProfileDir = flag.String("fetchmem.profile", "", "BenchmarkFetchMemory: write heap profiles (idle, peak) to this directory")

// BenchmarkFetchMemory: what peer fetches cost in Go heap, both ends in
// one process on badger stores (so that held content is on disk, not in
// the heap): the peak heap in use above what the two idle nodes use, and
// the peak of live heap (after a collection, every 30 ms while the fetches
// run). The provider's side counts too: its reads and sends.
//
//   - fast-reader: a 64 MiB asset streams to a reader that keeps up
//     (io.Copy);
//   - player: the same to a reader that reads 1 MiB every 20 ms (the
//     read-ahead window fills);
//   - 4-videos: one node reads four 64 MiB assets from the provider at
//     once, each at video pace (1 MiB every 250 ms: 32 Mbit/s, a 4K
//     stream), for 4 s each (the fetches' start, when each races
//     ReadAhead leaves ahead of its reader, and their steady pace), as a
//     gateway serving four videos does.
//
// Each metric is the most of its samples, above the idle nodes:
// peak-heap-MiB heap spans in use (garbage included), peak-live-MiB
// HeapAlloc read after runtime.GC, peak-marked-MiB what that collection
// marked (/gc/heap/live:bytes), and gc-allocs-MiB the most bytes
// allocated while one sample's collection ran. The collector marks
// concurrently: what is allocated while it marks counts as marked (live)
// for that cycle however soon it is dropped, and this transfer allocates
// two 1 MiB blocks per leaf (the provider's read, the client's receive
// buffer), so on a loaded machine, where a collection takes tens of
// milliseconds, peak-live and peak-marked count up to gc-allocs-MiB of
// blocks that were garbage before the collection ended. Run with
// GODEBUG=gcstoptheworld=1 for what was reachable at each sample: the
// collections then mark with no goroutine of ours running, and
// peak-reachable-MiB (reported only then) is the most that was reachable
// at a sample, above idle; gc-allocs-MiB is then what was allocated while
// the collections swept, which none of the figures counts as live.
//
//	go test -run '^$' -bench FetchMemory -benchtime 1x -count 7 ./fetch/
//	GODEBUG=gcstoptheworld=1 go test -run '^$' -bench FetchMemory -benchtime 1x -count 7 ./fetch/
//	go test -run '^$' -bench FetchMemory -benchtime 1x ./fetch/ -fetchmem.profile DIR
func BenchmarkFetchMemory(b *testing.B) {
	const size = 64 * MiB
	a := makeAsset(b, 52, size)
	prov := badgerNode(b, fetch.Config{})
	prov.hold(b, a)
	var videos []asset // made by the first run of 4-videos
	b.Run("fast-reader", func(b *testing.B) {
		for range b.N {
			fetchMemory(b, prov, []asset{a}, func(r io.Reader) error {
				_, err := io.Copy(io.Discard, r)
				return err
			})
		}
	})
	b.Run("player", func(b *testing.B) {
		for range b.N {
			fetchMemory(b, prov, []asset{a}, func(r io.Reader) error {
				return readPaced(r, 20*time.Millisecond, -1)
			})
		}
	})
	b.Run("4-videos", func(b *testing.B) {
		for len(videos) < 4 {
			v := makeAsset(b, 53+uint64(len(videos)), size)
			prov.hold(b, v)
			videos = append(videos, v)
		}
		for range b.N {
			fetchMemory(b, prov, videos, func(r io.Reader) error {
				return readPaced(r, 250*time.Millisecond, 16)
			})
		}
	})
}

// badgerNode is a node on a badger store in a temporary directory.
func badgerNode(b *testing.B, cfg fetch.Config) *node {
	st, err := store.New(store.Config{Dir: b.TempDir(), Quota: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	cfg.Store = st
	return newNode(b, cfg)
}

// readPaced reads r 1 MiB at a time, one every pace, until its end or
// for n reads (n < 0: to the end).
func readPaced(r io.Reader, pace time.Duration, n int) error {
	buf := make([]byte, MiB)
	for i := 0; n < 0 || i < n; i++ {
		if _, err := io.ReadFull(r, buf); err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		} else if err != nil {
			return err
		}
		time.Sleep(pace) // consumption, not synchronisation
	}
	return nil
}

// fetchMemory fetches each of as from prov on a new node, each read by
// read in a goroutine of its own, and reports the heap they cost (see
// BenchmarkFetchMemory).
func fetchMemory(b *testing.B, prov *node, as []asset, read func(io.Reader) error) {
	ps := make(providers)
	for _, a := range as {
		ps[a.t.Cid] = []peer.AddrInfo{prov.info()}
	}
	name := strings.ReplaceAll(b.Name(), "/", "-")
	cl := badgerNode(b, fetch.Config{Providers: ps})
	runtime.GC()
	idle := sampleHeap()
	writeHeapProfile(b, name+"-idle")
	var peak heapSample
	var samples atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			peak.inUse = max(peak.inUse, heapInUse())
			if i%3 == 2 { // a collection every 30 ms: what is live
				samples.Add(1)
				s := sampleHeap()
				peak.live, peak.gcAllocs = max(peak.live, s.live), max(peak.gcAllocs, s.gcAllocs)
				if s.marked > peak.marked {
					peak.marked = s.marked
					writeHeapProfile(b, name)
				}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	var rg sync.WaitGroup
	for _, a := range as {
		r, err := cl.f.Open(context.Background(), a.t)
		if err != nil {
			b.Fatal(err)
		}
		rg.Go(func() {
			defer r.Close()
			if err := read(r); err != nil {
				b.Error(err)
			}
		})
	}
	rg.Wait()
	close(stop)
	wg.Wait()
	above := func(v, base uint64) float64 { return float64(v-min(base, v)) / MiB }
	b.ReportMetric(above(peak.inUse, idle.inUse), "peak-heap-MiB")
	b.ReportMetric(above(peak.live, idle.live), "peak-live-MiB")
	b.ReportMetric(above(peak.marked, idle.marked), "peak-marked-MiB")
	b.ReportMetric(float64(peak.gcAllocs)/MiB, "gc-allocs-MiB")
	stw := stopTheWorldGC()
	if stw {
		b.ReportMetric(above(peak.marked, idle.marked), "peak-reachable-MiB")
	}
	b.Logf("peak Go heap in use %.1f MiB above the idle nodes', of which live (the most of %d samples after a collection, every 30 ms) %.1f MiB, marked %.1f MiB; at most %.1f MiB allocated during one collection (collections stop the world: %v); ReadAhead %d leaves of 1 MiB, window %d MiB",
		above(peak.inUse, idle.inUse), samples.Load(), above(peak.live, idle.live), above(peak.marked, idle.marked),
		float64(peak.gcAllocs)/MiB, stw, fetch.DefaultReadAhead, fetch.DefaultWindowBytes/MiB)
	cl.f.Close()
}

// stopTheWorldGC reports whether the collector marks with the world
// stopped (GODEBUG=gcstoptheworld=1 or 2): then what a collection marks is
// exactly what was reachable when it began.
func stopTheWorldGC() bool {
	for _, kv := range strings.Split(os.Getenv("GODEBUG"), ",") {
		if kv == "gcstoptheworld=1" || kv == "gcstoptheworld=2" {
			return true
		}
	}
	return false
}

// heapSample is what one sample of the heap found (see sampleHeap), or
// the most of several.
type heapSample struct {
	inUse    uint64 // heap spans in use, garbage included
	live     uint64 // HeapAlloc after the collection
	marked   uint64 // what the collection marked live
	gcAllocs uint64 // bytes allocated while the collection ran
}

// sampleHeap collects garbage and says what is live, and how much was
// allocated while it collected.
func sampleHeap() heapSample {
	before := allocated()
	live := liveHeap()
	return heapSample{inUse: heapInUse(), live: live, marked: markedHeap(), gcAllocs: allocated() - before}
}

// writeHeapProfile writes the heap profile (as of the last collection) to
// name.pprof in -fetchmem.profile, if set, and the goroutines' stacks to
// name.goroutines.
func writeHeapProfile(b *testing.B, name string) {
	if *memProfileDir == "" {
		return
	}
	f, err := os.Create(filepath.Join(*memProfileDir, name+".pprof"))
	if err != nil {
		b.Error(err)
		return
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Error(err)
	}
	g, err := os.Create(filepath.Join(*memProfileDir, name+".goroutines"))
	if err != nil {
		b.Error(err)
		return
	}
	defer g.Close()
	if err := pprof.Lookup("goroutine").WriteTo(g, 1); err != nil {
		b.Error(err)
	}
}

// liveHeap collects garbage and returns the bytes of live heap objects.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// markedHeap returns the bytes of heap objects the last collection found
// live (runtime/metrics /gc/heap/live:bytes): unlike HeapAlloc read after
// runtime.GC, it leaves out what was allocated between the end of the
// collection and the reading, which on a loaded machine (this goroutine
// waiting its turn while blocks stream) ran to tens of MiB.
func markedHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// allocated returns the bytes allocated on the heap since the program
// started (/gc/heap/allocs:bytes).
func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// heapInUse returns the bytes of heap spans in use, garbage included.
func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
