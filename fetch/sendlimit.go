package fetch

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Sending to peers that do not read. boxo's bitswap server writes each
// message synchronously in one of a few workers, with a deadline of 2 s plus
// the message's size at 12.5 KB/s (about 86 s for a 1 MiB block): one peer
// that asks for blocks and never reads the replies holds every worker for
// that long, and nobody else is served. The guard gives each send a deadline
// of its own (sendBase plus the size at minSendRate) and keeps, per peer, a
// record of sends that missed it:
//
//   - a first missed deadline puts the peer on probation for slowFor: one
//     send at a time (the others fail at once, so they hold no worker);
//   - a send begun on probation that misses its deadline too cuts the
//     peer: it is disconnected and its requests are refused for cutFor,
//     or until it connects again, when it is on probation again.
//
// A slow but honest peer (a browser on a thin link) is served one block at a
// time while on probation; a peer that reads nothing holds a worker per
// message for one deadline (10 s for a 1 MiB block) and is then gone.
//
// A cut peer that connects again is on probation from then on, no longer
// refused: a laptop that slept, or lost its network, while a seed sent to
// it misses deadlines as a peer that reads nothing does, and was refused
// for the rest of cutFor after it woke and redialled (every fetch of its
// first minute back went to the origin). A peer that reads nothing gains
// one send per connection it makes, a deadline of one worker, and is cut
// again; with a new key it would get perPeerSends at once.
const (
	sendBase    = 2 * time.Second
	minSendRate = 128 << 10 // bytes per second, about 1 Mbit/s
	slowFor     = time.Minute
	cutFor      = time.Minute

	// perPeerSends is how many sends to one peer run at once; more wait
	// for a slot, and fail after slotWait if the peer is stalled (on
	// probation, or no send to it has ended for sendBase while some are
	// under way): a peer that drains, however slowly, loses nothing. The server has more
	// workers than that where it serves many peers (seeds: see
	// serveWorkers), so that a few peers that do not read cannot hold
	// them all, while one peer's blocks go out a few at a time, in the
	// order it asked for them. Each send holds boxo's buffer for the
	// message (2 MiB for a 1 MiB leaf) and the receiver one as large
	// while it reads: 4 sends keep a peer's link busy at half the memory
	// of 8 (with 2, an honest fetch from a loaded seed under attack by
	// non-reading peers took 3 to 4x its baseline, TestFaultNonReadingPeer).
	perPeerSends = 4
	slotWait     = time.Second
)

// sendVerdict is what a missed deadline leads to.
type sendVerdict int

const (
	sendOK   sendVerdict = iota // nothing to do
	sendSlow                    // the peer is now on probation
	sendCut                     // disconnect the peer and refuse it for cutFor (or until it reconnects)
)

// sendLimiter holds the per-peer send records. Its methods take the time as
// an argument and decide; the guard carries the decisions out. It is safe
// for concurrent use.
type sendLimiter struct {
	mu    sync.Mutex
	peers map[peer.ID]*sendPeer
}

type sendPeer struct {
	slots     chan struct{} // sends under way, at most perPeerSends
	users     int           // goroutines holding or waiting for a slot
	inflight  int
	progress  time.Time // the last send to end, or the first to begin after none was under way
	slowSince time.Time // zero: not on probation
	slowUntil time.Time
	cutUntil  time.Time
}

func newSendLimiter() *sendLimiter {
	return &sendLimiter{peers: make(map[peer.ID]*sendPeer)}
}

// sendDeadline is how long a message of size bytes may take to write.
func sendDeadline(size int) time.Duration {
	return sendBase + time.Duration(int64(size)*int64(time.Second)/minSendRate)
}

// acquire returns p's send slots, to take one of, and holds its record
// until release.
func (l *sendLimiter) acquire(p peer.ID, now time.Time) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.peers[p]
	if s == nil {
		if len(l.peers) >= maxSendPeers {
			l.pruneLocked(now)
		}
		s = &sendPeer{}
		l.peers[p] = s
	}
	if s.slots == nil {
		s.slots = make(chan struct{}, perPeerSends)
	}
	s.users++
	return s.slots
}

// release undoes acquire.
func (l *sendLimiter) release(p peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.peers[p]; s != nil {
		s.users--
	}
}

// begin admits a send of size bytes to p at now and returns its deadline,
// or false when p is cut or on probation with a send under way.
func (l *sendLimiter) begin(p peer.ID, size int, now time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.peers[p]
	if s == nil {
		s = &sendPeer{}
		l.peers[p] = s
	}
	if now.Before(s.cutUntil) {
		return time.Time{}, false
	}
	if !s.slowSince.IsZero() && !now.Before(s.slowUntil) {
		s.slowSince, s.slowUntil = time.Time{}, time.Time{} // probation served
	}
	if !s.slowSince.IsZero() && s.inflight > 0 {
		return time.Time{}, false
	}
	if s.inflight == 0 {
		s.progress = now
	}
	s.inflight++
	return now.Add(sendDeadline(size)), true
}

// end records the end of a send to p begun at began; missed says it ran out
// of its deadline.
func (l *sendLimiter) end(p peer.ID, began time.Time, missed bool, now time.Time) sendVerdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.peers[p]
	if s == nil {
		return sendOK
	}
	s.inflight--
	s.progress = now
	v := sendOK
	switch {
	case !missed:
	case s.slowSince.IsZero():
		s.slowSince, s.slowUntil = now, now.Add(slowFor)
		v = sendSlow
	case !began.Before(s.slowSince):
		s.cutUntil = now.Add(cutFor)
		s.slowSince, s.slowUntil = time.Time{}, time.Time{}
		v = sendCut
	}
	// Sends begun before probation that miss their deadline are the same
	// offence: they count once.
	return v
}

// maxSendPeers bounds the records kept before the idle ones are pruned.
const maxSendPeers = 4096

// pruneLocked forgets the peers with nothing under way and no sentence.
func (l *sendLimiter) pruneLocked(now time.Time) {
	for p, s := range l.peers {
		if s.users == 0 && s.inflight == 0 && !now.Before(s.cutUntil) && !now.Before(s.slowUntil) {
			delete(l.peers, p)
		}
	}
}

// stalled reports whether p is on probation, or has sends under way and
// none ended for sendBase.
func (l *sendLimiter) stalled(p peer.ID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.peers[p]
	if s == nil {
		return false
	}
	if !s.slowSince.IsZero() && now.Before(s.slowUntil) {
		return true
	}
	return s.inflight > 0 && now.Sub(s.progress) >= sendBase
}

// reconnected records that p connected again at now: a cut peer is on
// probation from then on instead of refused (see above).
func (l *sendLimiter) reconnected(p peer.ID, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.peers[p]
	if s == nil || !now.Before(s.cutUntil) {
		return
	}
	s.cutUntil = time.Time{}
	s.slowSince, s.slowUntil = now, now.Add(slowFor)
}

// refused reports whether p's requests are refused at now (it was cut).
func (l *sendLimiter) refused(p peer.ID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.peers[p]
	if s == nil {
		return false
	}
	return now.Before(s.cutUntil)
}
