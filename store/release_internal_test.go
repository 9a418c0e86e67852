package store

import (
	"runtime/metrics"
	"testing"
	"time"
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
	for range 64 {
		heapSink = append(heapSink, make([]byte, 1<<20))
	}
	heapSink = nil
	released0 := releasedBytes(t)
	if n := h.release(); n < 64<<20 {
		t.Fatalf("release found %d MiB to release after 64 MiB of garbage", n>>20)
	}
	if d := releasedBytes(t) - released0; d < 32<<20 {
		t.Errorf("%d MiB returned to the kernel, want most of the 64 MiB of garbage", d>>20)
	}
	if n := h.release(); n != 0 {
		t.Errorf("a second check right after released (%d MiB allocated or free)", n>>20)
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
	processHeap.mu.Lock()
	processHeap.last = time.Time{} // another run of this test set it an hour ahead
	processHeap.mu.Unlock()
	releaseHeap(now, every) // the first check: sets the baseline
	for range 16 {
		heapSink = append(heapSink, make([]byte, 1<<20))
	}
	heapSink = nil
	if n := releaseHeap(now.Add(time.Second), every); n != 0 {
		t.Errorf("a second store's check a second later released %d MiB", n>>20)
	}
	if n := releaseHeap(now.Add(every), every); n < 16<<20 {
		t.Errorf("the check an interval later released %d MiB, want the 16 MiB allocated since", n>>20)
	}
}
