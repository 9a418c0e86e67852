package fetch

import (
	"context"
	"sync"
	"time"
)

// Received blocks waiting for the store. A peer sends the leaves a fetch
// asks for (up to ReadAhead of them per Reader) as fast as the link goes,
// and each is held in memory until the store has it. On a loaded machine
// the store falls behind: in BenchmarkFetchMemory's fast reader on a
// loaded machine, at a peak of 21.7 MiB reachable above idle, 15 MiB were
// received blocks, 16 of them each being written to the store by a
// goroutine of their own; without this, four fetches into a store that
// took nothing had the provider send all 32 leaves they asked for
// (TestStoreBacklogHoldsBack). The inbound filter therefore reads the next block of a
// peer's message only while the blocks being stored come to less than
// storeBacklogBytes, so that the peer's send waits (in the link's flow
// control) instead of the block waiting here; it waits at most
// storeBacklogWait for the store, far within the deadline a sender gives
// a block (sendDeadline: 10 s for 1 MiB), so that a store that stops
// answering costs this peer nothing more than it did before.
const (
	storeBacklogBytes = 4 << 20
	storeBacklogWait  = time.Second
)

// storeBacklog counts the bytes of blocks a Fetcher has taken from a
// source and not yet stored (Reader.keepCounted) and lets the inbound
// filter wait for them. It is safe for concurrent use.
type storeBacklog struct {
	limit int64
	mu    sync.Mutex
	n     int64
	less  chan struct{} // closed (and replaced) when n falls
}

func newStoreBacklog(limit int64) *storeBacklog {
	return &storeBacklog{limit: limit, less: make(chan struct{})}
}

// add counts n more bytes being stored; done(n) undoes it.
func (b *storeBacklog) add(n int64) {
	b.mu.Lock()
	b.n += n
	b.mu.Unlock()
}

func (b *storeBacklog) done(n int64) {
	b.mu.Lock()
	b.n -= n
	close(b.less)
	b.less = make(chan struct{})
	b.mu.Unlock()
}

// wait returns once a block of n bytes fits beside those being stored
// (one always fits when none is), after at most max, or when ctx ends.
func (b *storeBacklog) wait(ctx context.Context, n int, max time.Duration) {
	var timeout <-chan time.Time
	for {
		b.mu.Lock()
		fits := b.n == 0 || b.n+int64(n) <= b.limit
		less := b.less
		b.mu.Unlock()
		if fits {
			return
		}
		if timeout == nil {
			t := time.NewTimer(max)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-less:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
}

// storing returns the bytes being stored.
func (b *storeBacklog) storing() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}
