package fetch

import (
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// HeldBytes is the bytes of leaves the Reader holds in memory, for tests.
func (r *Reader) HeldBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, s := range r.st {
		n += int64(len(s.data))
	}
	return n
}

// StuckAfter is how long a reader waits on a leaf asked of peers before
// asking again (stuckAfter).
const StuckAfter = stuckAfter

// WaitsRefused reports whether a Read waits on a leaf that every peer
// asked for it said DONT_HAVE of (guard.refusers), whoever they were.
func (r *Reader) WaitsRefused() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, waiting := r.waitingLeafLocked()
	return waiting && !r.waitSince.IsZero() && len(r.f.guard.refusers(r.leaves[cur].Cid)) > 0
}

// JoinsRefused reports whether the origin would join now because the
// peers asked do not have the leaf a Read waits on (joinState.lacking).
func (r *Reader) JoinsRefused() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	return r.joinStateLocked(now, true, false, newSoon(now)).lacking()
}

// AnswerHavesInQueue makes f's server answer want-haves through boxo's
// task queue only, as a holder without haves.go does (Kubo, meshcdn
// before it): a busy holder's HAVE comes when a worker is free.
func (f *Fetcher) AnswerHavesInQueue() { f.guard.haves.close() }

// OnWantNoted makes f's guard call fn after it noted a want-have of a
// block f lacks (haves.go), to tell a test the want has arrived.
func (f *Fetcher) OnWantNoted(fn func()) {
	f.guard.haves.mu.Lock()
	f.guard.haves.onNote = fn
	f.guard.haves.mu.Unlock()
}

// ServeInTurn makes f serve every block in its serving cap's turn, as a
// holder without urgent.go does (Kubo, meshcdn before it): a busy
// holder's first block of a file comes when the cap lets it.
func (f *Fetcher) ServeInTurn() { f.urgent.stop() }

// WantedUrgently reports whether a peer has asked f for c with the top
// priority lately, so that f serves it ahead of its cap's queue (urgent.go).
func (f *Fetcher) WantedUrgently(c cid.Cid) bool { return f.urgent.urgent(c, time.Now()) }

// OriginCapacity is what the origin is estimated to give one fetch, in
// bytes per second (originCapacity).
func (f *Fetcher) OriginCapacity() float64 { return f.originCapacity() }

// PenaliseMissing penalises p as f's guard does a peer whose HAVEs were
// not followed by blocks in time (promises.due names it a liar) or a
// silent provider.
func (f *Fetcher) PenaliseMissing(p peer.ID) bool {
	return f.guard.penaliseMissing(p, f.cfg.Penalty)
}

// OnServeWants makes f's serving order call fn after it noted a wantlist
// (serveorder.go; only with Config.ServeEvenly).
func (f *Fetcher) OnServeWants(fn func()) {
	f.order.mu.Lock()
	f.order.onNote = fn
	f.order.mu.Unlock()
}

// AfterWait does what r's scheduling loop does after a wait for due that
// ended at now (afterWait), for tests that play a sleep of the process.
func (r *Reader) AfterWait(due, now time.Time) { r.afterWait(due, now) }

// SetGoOriginHook sets a function run as a Reader starts an origin request
// for leaf i (nil: none); the test's cleanup unsets it.
func SetGoOriginHook(t testing.TB, fn func(r *Reader, i int)) {
	testHookGoOrigin = fn
	t.Cleanup(func() { testHookGoOrigin = nil })
}

// SetWholeHook sets a function run, with the Reader's lock held, as a
// whole-file read of its origin begins (nil: none); the test's cleanup
// unsets it.
func SetWholeHook(t testing.TB, fn func(r *Reader)) {
	testHookWhole = fn
	t.Cleanup(func() { testHookWhole = nil })
}

// WholeReading reports whether a whole-file read of the Reader's origin is
// under way.
func (r *Reader) WholeReading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.whole != nil
}
