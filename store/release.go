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

// releaseLoop runs until Close: with mapped, every interval, it gives the
// pages of the database's memory-mapped files back to the kernel and runs
// the process's heap check (see Config.ReleaseMapped); without, every
// quarter of the interval, it runs the heap check for a quiet process only
// (Config.ReleaseQuietHeap).
func (s *Store) releaseLoop(dir string, every time.Duration, mapped bool) {
	defer s.wg.Done()
	var abs string
	if mapped {
		var err error
		if abs, err = filepath.Abs(dir); err != nil {
			s.log.Warn("releasing mapped pages: no absolute path", "dir", dir, "err", err)
			return
		}
	} else {
		every /= 4 // a quiet process is told from a busy one over a quarter of the interval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		if mapped {
			if n, err := releaseMapped(abs); err != nil {
				s.log.Debug("releasing mapped pages", "err", err)
			} else if n > 0 {
				s.log.Debug("released mapped pages", "bytes", n)
			}
		}
		if n := releaseHeap(time.Now(), every, !mapped); n > 0 {
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

// releaseHeap runs the process's heap check (heapReleaser.release, for a
// quiet process only if quiet) at now, unless some store's loop ran it
// within half of every; it returns what the check released.
func releaseHeap(now time.Time, every time.Duration, quiet bool) int64 {
	processHeap.mu.Lock()
	defer processHeap.mu.Unlock()
	if processHeap.h == nil {
		processHeap.h = newHeapReleaser()
	}
	if now.Sub(processHeap.last) < every/2 {
		return 0
	}
	processHeap.last = now
	return processHeap.h.release(quiet)
}

// minHeapRelease is the least allocation since the last check (for a
// quiet process, since the last release), or free heap, for which the
// release loop forces a collection: below it, the collection costs more
// than it returns.
const minHeapRelease = 8 << 20

// heapReleaser gives the Go heap's garbage and free pages back to the
// kernel after activity. The Go runtime returns free pages only slowly, and
// collects only as the heap grows: an app that fetched 30 MiB and went idle
// kept about 40 MiB of heap resident (RssAnon) a minute later, and a seed
// that pinned 30 MiB and went idle kept the heap of the pin's end (61 MiB
// of objects, 10 of them live: RssAnon 41-53 MiB) until its next
// collection, which an idle seed put off until a peer asked it for
// something. A collection is the only way to tell garbage from live
// objects, so the releaser forces one (debug.FreeOSMemory) when the process
// allocated minHeapRelease or more since its last check, or holds that much
// free. For a quiet process only (release's quiet, checked four times as
// often) it waits instead until less than a quarter of that was allocated
// since the last check, and then forces one if that much was allocated
// since the last it forced (or it holds that much free): once after each
// burst of activity, 5 to 10 s after it at a seed, leaving a busy seed to
// the runtime's own pacing. An idle process is left alone. Not safe for
// concurrent use.
type heapReleaser struct {
	allocs   uint64 // allocated as of the last check
	released uint64 // allocated as of the last forced collection
}

// newHeapReleaser returns a heapReleaser that counts allocations from now,
// and for a quiet process's burst from the process's start (a seed's store
// opened, and its first pin done, before the first check).
func newHeapReleaser() *heapReleaser {
	allocs, _, _ := heapMetrics()
	return &heapReleaser{allocs: allocs}
}

// release checks and releases as above, and returns the bytes allocated
// since the last check (quiet: since the last release) plus those free, if
// it released (else 0).
func (h *heapReleaser) release(quiet bool) int64 {
	allocs, free, ok := heapMetrics()
	if !ok {
		return 0
	}
	since := allocs - min(h.allocs, allocs)
	burst := allocs - min(h.released, allocs)
	h.allocs = allocs
	if !heapDue(since, burst, free, quiet) {
		return 0
	}
	h.released = allocs
	debug.FreeOSMemory()
	if quiet {
		return int64(burst + free)
	}
	return int64(since + free)
}

// heapDue reports whether a process that allocated since bytes since the
// last check and burst since the last forced collection, and holds free
// bytes of free heap, gets a forced collection (see heapReleaser).
func heapDue(since, burst, free uint64, quiet bool) bool {
	if quiet {
		return since < minHeapRelease/4 && (burst >= minHeapRelease || free >= minHeapRelease)
	}
	return since >= minHeapRelease || free >= minHeapRelease
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
