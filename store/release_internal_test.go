package store

import (
	"context"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// heapSink keeps the test's allocations reachable until it drops them, so
// that the compiler cannot elide them.
var heapSink [][]byte

// TestHeapReleaser: after 64 MiB of garbage (what a fetch leaves), the
// release loop's check collects it and gives its pages back to the kernel
// at once (the runtime would keep them resident until a collection was due
// and its scavenger got to them); right after, with nothing allocated
// since, it does nothing.
func TestHeapReleaser(t *testing.T) {
	h := newHeapReleaser()
	garbage(64)
	released0 := releasedBytes(t)
	if n := h.release(false); n < 64<<20 {
		t.Fatalf("release found %d MiB to release after 64 MiB of garbage", n>>20)
	}
	wantReturned(t, released0, 64)
	if n := h.release(false); n != 0 {
		t.Errorf("a second check right after released (%d MiB allocated or free)", n>>20)
	}
}

// garbage allocates mib MiB and lets go of it (kept reachable in heapSink
// until then, so that the compiler cannot elide it).
func garbage(mib int) {
	for range mib {
		heapSink = append(heapSink, make([]byte, 1<<20))
	}
	heapSink = nil
}

// wantReturned fails t unless most of mib MiB of garbage went back to the
// kernel since the heap's released bytes were released0.
func wantReturned(t *testing.T, released0 int64, mib int) {
	t.Helper()
	if d := releasedBytes(t) - released0; d < int64(mib)<<19 {
		t.Errorf("%d MiB returned to the kernel, want most of the %d MiB of garbage", d>>20, mib)
	}
}

// releasedBytes returns the Go heap's bytes returned to the kernel.
func releasedBytes(t *testing.T) int64 {
	m := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 {
		t.Fatal("no /memory/classes/heap/released:bytes")
	}
	return int64(m[0].Value.Uint64())
}

// TestReleaseHeapOncePerInterval: however many stores' loops check, the
// process's heap is checked at most once per half interval: the second
// store's check right after the first does nothing, though 16 MiB were
// allocated since (each store forced a collection before).
func TestReleaseHeapOncePerInterval(t *testing.T) {
	const every = time.Hour
	now := time.Now()
	resetLast := func() {
		processHeap.mu.Lock()
		processHeap.last = time.Time{} // set an hour ahead below
		processHeap.mu.Unlock()
	}
	resetLast()
	defer resetLast() // for the other stores' checks in this process

	releaseHeap(now, every, false) // the first check: sets the baseline
	garbage(16)
	if n := releaseHeap(now.Add(time.Second), every, false); n != 0 {
		t.Errorf("a second store's check a second later released %d MiB", n>>20)
	}
	if n := releaseHeap(now.Add(every), every, false); n < 16<<20 {
		t.Errorf("the check an interval later released %d MiB, want the 16 MiB allocated since", n>>20)
	}
}

// TestQuietHeapReleaser: for a quiet process only (a seed), the check
// leaves a process that is allocating alone, collects once it has gone
// quiet after the burst (a seed idle after a pin held the pin's garbage
// until a peer asked it for something), and not again while it stays
// quiet.
func TestQuietHeapReleaser(t *testing.T) {
	h := newHeapReleaser()
	garbage(64)
	if n := h.release(true); n != 0 {
		t.Fatalf("the check released %d MiB while 64 MiB had just been allocated", n>>20)
	}
	released0 := releasedBytes(t)
	if n := h.release(true); n < 64<<20 {
		t.Fatalf("the check after the burst released %d MiB, want the 64 MiB allocated since the last release", n>>20)
	}
	wantReturned(t, released0, 64)
	if n := h.release(true); n != 0 {
		t.Errorf("a third check, quiet since, released %d MiB", n>>20)
	}
}

// TestHeapDue: the rule of both kinds of check, at the edges of
// minHeapRelease.
func TestHeapDue(t *testing.T) {
	const m = minHeapRelease
	for _, c := range []struct {
		name               string
		since, burst, free uint64
		quiet, want        bool
	}{
		{"busy", m, m, 0, false, true},
		{"free heap", 0, 0, m, false, true},
		{"idle", m - 1, m, m - 1, false, false},
		{"quiet: busy", m / 4, 4 * m, m, true, false},
		{"quiet: after a burst", m/4 - 1, m, 0, true, true},
		{"quiet: free heap", 0, 0, m, true, true},
		{"quiet: idle since the last release", 0, m - 1, m - 1, true, false},
	} {
		if got := heapDue(c.since, c.burst, c.free, c.quiet); got != c.want {
			t.Errorf("%s: heapDue(%d, %d, %d, %v) = %v, want %v", c.name, c.since, c.burst, c.free, c.quiet, got, c.want)
		}
	}
}

// TestStoreReleasesQuietHeap: a store on disk with ReleaseQuietHeap (a
// seed's) and no ReleaseMapped forces a collection by itself once the
// process has gone quiet after an import, and keeps its mapped pages.
func TestStoreReleasesQuietHeap(t *testing.T) {
	s, err := New(Config{Dir: t.TempDir(), ReleaseQuietHeap: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	forced0 := forcedCollections(t)
	if _, err := s.Import(context.Background(), testutil.Reader(8, 24<<20), ImportOptions{Pin: true}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for forcedCollections(t) == forced0 {
		if time.Now().After(deadline) {
			t.Fatal("no forced collection within 20 s of a 24 MiB import, the process quiet since")
		}
		time.Sleep(10 * time.Millisecond) // the runtime's counters have no event to wait on
	}
}

// forcedCollections returns the process's forced garbage collections.
func forcedCollections(t *testing.T) uint64 {
	m := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 {
		t.Fatal("no /gc/cycles/forced:gc-cycles")
	}
	return m[0].Value.Uint64()
}
