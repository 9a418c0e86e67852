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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// memProfileDir, if set, is where BenchmarkFetchMemory writes heap
// profiles: NAME-idle.pprof before each fetch and NAME.pprof at its peak of
// live heap, to compare with go tool pprof -diff_base, and beside each the
// goroutines at that moment (NAME.goroutines): where blocks wait.
var memProfileDir = flag.String("fetchmem.profile", "", "BenchmarkFetchMemory: write heap profiles (idle, peak) to this directory")

// BenchmarkFetchMemory: what a peer fetch costs in Go heap, both ends in
// one process on badger stores (so that held content is on disk, not in
// the heap): the peak heap in use above what the two idle nodes use, and
// the peak of live heap (after a collection, every 30 ms while the fetch
// runs), while a 64 MiB asset streams to a reader that keeps up (io.Copy)
// and to one that reads 1 MiB every 20 ms (a player: the read-ahead window
// fills). The provider's side counts too: its reads and sends.
//
//	go test -run '^$' -bench FetchMemory -benchtime 1x -count 3 ./fetch/
//	go test -run '^$' -bench FetchMemory -benchtime 1x ./fetch/ -fetchmem.profile DIR
func BenchmarkFetchMemory(b *testing.B) {
	const size = 64 * MiB
	a := makeAsset(b, 52, size)
	badgerNode := func(cfg fetch.Config) *node {
		st, err := store.New(store.Config{Dir: b.TempDir(), Quota: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		cfg.Store = st
		return newNode(b, cfg)
	}
	prov := badgerNode(fetch.Config{})
	prov.hold(b, a)
	for range b.N {
		for _, tc := range []struct {
			name string
			read func(r io.Reader) error
		}{
			{"fast-reader", func(r io.Reader) error {
				_, err := io.Copy(io.Discard, r)
				return err
			}},
			{"player", func(r io.Reader) error {
				buf := make([]byte, MiB)
				for {
					if _, err := io.ReadFull(r, buf); err == io.EOF || err == io.ErrUnexpectedEOF {
						return nil
					} else if err != nil {
						return err
					}
					time.Sleep(20 * time.Millisecond) // consumption, not synchronisation
				}
			}},
		} {
			cl := badgerNode(fetch.Config{Providers: providers{a.t.Cid: {prov.info()}}})
			runtime.GC()
			base, baseLive, baseMarked := heapInUse(), liveHeap(), markedHeap()
			writeHeapProfile(b, tc.name+"-idle")
			var samples atomic.Int64
			var peak, peakLive, peakMarked atomic.Uint64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for i := 0; ; i++ {
					if h := heapInUse(); h > peak.Load() {
						peak.Store(h)
					}
					if i%3 == 2 { // a collection every 30 ms: what is live
						samples.Add(1)
						if h := liveHeap(); h > peakLive.Load() {
							peakLive.Store(h)
						}
						if h := markedHeap(); h > peakMarked.Load() {
							peakMarked.Store(h)
							writeHeapProfile(b, tc.name)
						}
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			})
			r, err := cl.f.Open(context.Background(), a.t)
			if err != nil {
				b.Fatal(err)
			}
			if err := tc.read(r); err != nil {
				b.Fatal(err)
			}
			r.Close()
			close(stop)
			wg.Wait()
			extra := float64(peak.Load()-min(base, peak.Load())) / MiB
			live := float64(peakLive.Load()-min(baseLive, peakLive.Load())) / MiB
			marked := float64(peakMarked.Load()-min(baseMarked, peakMarked.Load())) / MiB
			b.ReportMetric(extra, tc.name+"-peak-heap-MiB")
			b.ReportMetric(live, tc.name+"-peak-live-MiB")
			b.ReportMetric(marked, tc.name+"-peak-marked-MiB")
			b.Logf("%-12s peak Go heap in use %.1f MiB above the idle nodes', of which live (the most of %d samples after a collection, every 30 ms) %.1f MiB; ReadAhead %d leaves of 1 MiB, window %d MiB",
				tc.name, extra, samples.Load(), live, fetch.DefaultReadAhead, fetch.DefaultWindowBytes/MiB)
			cl.f.Close()
		}
	}
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

// heapInUse returns the bytes of heap spans in use, garbage included.
func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
