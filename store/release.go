package store

import (
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// DefaultReleaseMapped is a suggested Config.ReleaseMapped for a node that
// fetches more than it serves (the mesh package's app role uses it).
const DefaultReleaseMapped = 20 * time.Second

// releaseLoop gives the pages of the database's memory-mapped files back
// to the kernel every interval (see Config.ReleaseMapped), until Close.
func (s *Store) releaseLoop(dir string, every time.Duration) {
	defer s.wg.Done()
	abs, err := filepath.Abs(dir)
	if err != nil {
		s.log.Warn("releasing mapped pages: no absolute path", "dir", dir, "err", err)
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		if n, err := releaseMapped(abs); err != nil {
			s.log.Debug("releasing mapped pages", "err", err)
		} else if n > 0 {
			s.log.Debug("released mapped pages", "bytes", n)
		}
		if n := releaseHeap(time.Now(), every); n > 0 {
			s.log.Debug("released Go heap", "bytes", n)
		}
	}
}

// processHeap is the process's one heapReleaser. The Go heap, and what
// debug.FreeOSMemory does, are the whole process's: with a store each
// releasing on its own, 50 nodes on badger in one process (a test, the
// bench) forced 50 collections per interval for the same allocations.
var processHeap struct {
	mu   sync.Mutex
	h    *heapReleaser
	last time.Time // when a store last ran the check
}

// releaseHeap runs the process's heap check (heapReleaser.release) at now,
// unless some store's loop ran it within half of every; it returns what
// the check released.
func releaseHeap(now time.Time, every time.Duration) int64 {
	processHeap.mu.Lock()
	defer processHeap.mu.Unlock()
	if processHeap.h == nil {
		processHeap.h = newHeapReleaser()
	}
	if now.Sub(processHeap.last) < every/2 {
		return 0
	}
	processHeap.last = now
	return processHeap.h.release()
}

// minHeapRelease is the least allocation since the last check, or free
// heap, for which the release loop forces a collection: below it, the
// collection costs more than it returns.
const minHeapRelease = 8 << 20

// heapReleaser gives the Go heap's garbage and free pages back to the
// kernel after activity. The Go runtime returns free pages only slowly, and
// collects only as the heap grows: an app that fetched 30 MiB and went idle
// kept about 40 MiB of heap resident (RssAnon) a minute later. A
// collection is the only way to tell garbage from live objects, so the
// releaser forces one (debug.FreeOSMemory) when the process allocated
// minHeapRelease or more since its last check, or holds that much free
// already; an idle process is left alone. Not safe for concurrent use.
type heapReleaser struct{ allocs uint64 }

// newHeapReleaser returns a heapReleaser that counts allocations from now.
func newHeapReleaser() *heapReleaser {
	allocs, _, _ := heapMetrics()
	return &heapReleaser{allocs: allocs}
}

// release checks and releases as above, and returns the bytes allocated
// since the last check plus those free, if it released (else 0).
func (h *heapReleaser) release() int64 {
	allocs, free, ok := heapMetrics()
	if !ok {
		return 0
	}
	since := allocs - min(h.allocs, allocs)
	h.allocs = allocs
	if since < minHeapRelease && free < minHeapRelease {
		return 0
	}
	debug.FreeOSMemory()
	return int64(since + free)
}

// heapMetrics reads the bytes the Go heap allocated since the process
// started and those it holds free, not yet returned to the kernel.
func heapMetrics() (allocs, free uint64, ok bool) {
	m := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 || m[1].Value.Kind() != metrics.KindUint64 {
		return 0, 0, false
	}
	return m[0].Value.Uint64(), m[1].Value.Uint64(), true
}
