package store

import (
	"fmt"
	"sync"
	"time"
)

// FreeSpaceFunc reports the bytes free for an unprivileged writer on the
// filesystem holding dir. An error means the store cannot write there (the
// directory is gone, the filesystem failed).
type FreeSpaceFunc func(dir string) (int64, error)

// Badger writes its value log, memtable logs and tables through memory
// maps of files it grew with ftruncate, so a full disk shows up as SIGBUS
// rather than an error. The store keeps DiskMargin free instead: enough for
// what badger may still write without being asked, which is
//
//   - the rest of the current value log file and one garbage collection
//     rewrite into the next: 2 × vlogFileSize,
//   - the write-ahead logs of the memtables (each mapped at twice the
//     memtable size) and the table a flush writes: 2 × (memtables+1) ×
//     memTableSize,
//   - a compaction of the small LSM tree (keys and records): 16 MiB.
const (
	vlogFileSize = 16 << 20
	memTableSize = 4 << 20
	numMemtables = 2
	// DiskMargin is the free space below which a Store on disk refuses
	// writes with ErrDiskFull, and opens read-only: 72 MiB.
	DiskMargin = 2*vlogFileSize + 2*(numMemtables+1)*memTableSize + 16<<20
)

// maxLeaf is the largest block an import writes (1 MiB chunks): DiskFull
// stays set while one would be refused.
const maxLeaf = 1 << 20

// diskGuard decides whether a write of n bytes may go to disk. statfs is
// cheap but not free, so the answer is cached: the free space read last,
// less the bytes allowed since, is trusted for up to a second unless it
// comes within checkSlack of the margin.
type diskGuard struct {
	dir    string
	free   FreeSpaceFunc
	margin int64

	mu      sync.Mutex
	checked time.Time
	last    int64 // free bytes at checked
	since   int64 // bytes allowed since checked
	lastErr error
}

const (
	checkEvery = time.Second
	checkSlack = 32 << 20
)

// allow returns nil if n more bytes leave at least the margin free, else
// an error wrapping ErrDiskFull (or saying why the space is unknown).
func (g *diskGuard) allow(n int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if g.checked.IsZero() || now.Sub(g.checked) >= checkEvery || g.last-g.since-n < g.margin+checkSlack {
		g.refresh(now)
	}
	if g.lastErr != nil {
		return fmt.Errorf("%w: cannot read the free space of %s: %v", ErrDiskFull, g.dir, g.lastErr)
	}
	if left := g.last - g.since - n; left < g.margin {
		return fmt.Errorf("%w: %d bytes free on the disk of %s, %d kept free", ErrDiskFull, g.last-g.since, g.dir, g.margin)
	}
	g.since += n
	return nil
}

// fits reports whether n more bytes would keep the margin, by the last
// reading (no statfs).
func (g *diskGuard) fits(n int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastErr == nil && g.last-g.since-n >= g.margin
}

// refresh reads the free space again. The caller holds mu.
func (g *diskGuard) refresh(now time.Time) {
	g.last, g.lastErr = g.free(g.dir)
	g.checked, g.since = now, 0
}

// low reports whether the disk is now below the margin (or unknown).
func (g *diskGuard) low() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refresh(time.Now())
	return g.lastErr != nil || g.last < g.margin
}

// freeNow returns the free space read now.
func (g *diskGuard) freeNow() (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refresh(time.Now())
	return g.last, g.lastErr
}
