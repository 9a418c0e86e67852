package fetch

import (
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Blocks on their way. bitswap hears of a block only once all of it has
// come, and a holder sending over a slow link (a kiosk's uplink shared by
// the peers it serves) takes seconds per 1 MiB block. The liar rule
// (promises.due) penalised such a holder when two of its HAVEs had waited
// past their due with no block delivered for haveDeadline, while its block
// was arriving: in TestBusyHolderNotLiar, a holder sending at 300 KiB/s,
// every run. A liar sends nothing; a busy holder's block is arriving. So
// the bitswap streams note, as each block's bytes come in, the peer they
// come from (inflow), and a peer whose block bytes came within
// inflowRecent is not judged a liar yet: its judgement waits a
// haveDeadline more, at most maxLiarDeferrals times in a row (a block at
// 0.3 MiB/s comes within them; a liar that sends bytes of blocks it never
// finishes gains that much and no more). A peer that trickles a block
// slower than minSendRate has its stream closed (inbound.go), and one that
// keeps sending is delivering, however slowly: the slow-peer rules of the
// Reader judge it. A Go holder paces its serving cap at the store read
// (serve.go) and then sends a block at once: this does not see it busy
// (docs/flash-crowd.md, "Busy holders named liars").

const (
	// inflowRecent is how lately block bytes must have come from a peer
	// for its block to count as on its way.
	inflowRecent = time.Second
	// inflowChunk is how many bytes of a block are read between notes.
	inflowChunk = 64 << 10
	// maxLiarDeferrals is how many times in a row a liar's judgement
	// waits for a block on its way.
	maxLiarDeferrals = 2
	// maxInflowPeers bounds the peers inflow remembers; past it, those
	// not heard from within inflowRecent are forgotten first.
	maxInflowPeers = 4096
)

// inflow records when block bytes last came from each peer. The zero value
// is not usable; a nil *inflow records nothing and knows of nothing.
type inflow struct {
	mu   sync.Mutex
	last map[peer.ID]time.Time // block bytes last came
}

func newInflow() *inflow { return &inflow{last: make(map[peer.ID]time.Time)} }

// note records that block bytes came from p at now. Past maxInflowPeers
// it makes room by forgetting the peers not heard from within
// inflowRecent; with no room, p is not recorded.
func (in *inflow) note(p peer.ID, now time.Time) {
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.last[p]; !ok && len(in.last) >= maxInflowPeers {
		for q, at := range in.last {
			if now.Sub(at) >= inflowRecent {
				delete(in.last, q)
			}
		}
		if len(in.last) >= maxInflowPeers {
			return
		}
	}
	in.last[p] = now
}

// recent reports whether block bytes came from p within inflowRecent
// before now.
func (in *inflow) recent(p peer.ID, now time.Time) bool {
	if in == nil {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	at, ok := in.last[p]
	return ok && now.Sub(at) < inflowRecent
}

// readNoting fills buf, a block's bytes, from r, noting p in in after each
// inflowChunk (or the block's end) has come: a peer counts as sending only
// once it has sent that much, not for a block's header alone.
func readNoting(r io.Reader, buf []byte, in *inflow, p peer.ID) error {
	for len(buf) > 0 {
		n := min(len(buf), inflowChunk)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return err
		}
		in.note(p, time.Now())
		buf = buf[n:]
	}
	return nil
}
