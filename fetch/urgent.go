package fetch

import (
	"sync"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/ipfs/go-cid"
)

// Blocks a reader waits on go ahead of the serving cap's queue. A holder at
// its cap (servingStore) hands out blocks in the order its workers asked
// for them, each waiting for the blocks reserved before it: an app at 4
// MiB/s with its workers' 1 MiB blocks queued made a peer's first block of
// a file wait up to a second, and the fetch, given PeerTimeout, took the
// file from the origin; in the demo site's 50-app flash crowd each of the
// site's small files went to the origin 10 to 30 times although every
// fetch knew a holder. A want-block with the top priority (topPriority,
// math.MaxInt32: the Fetcher gives it to the leaf its reader needs next,
// guard.order, and to the first want, firstwant.go; boxo's client to the
// first want it sends a peer) marks its block urgent: when it is read for
// sending it takes its share of the budget without waiting, if the
// budget's debt (what is reserved and not yet due) then stays within one
// burst (Config.ServeBurst). The blocks reserved before it keep their turns and
// those after it wait as long as they would have, so the cap holds over
// time, and at any moment the holder is ahead of it by at most one burst:
// a peer that marks every want urgent gains that much and no more. An app
// (4 workers, 1 MiB leaves, a burst of 4 MiB) thus serves an urgent block
// at once while less than 3 MiB wait for its cap; a seed, whose many
// workers keep a debt of several bursts, serves in turn. Two wider rules
// did worse beside a seed (examples/bench's crowds): let ahead by a second
// of the cap, a seed sent the leaf every reader needed next at once and the
// rest of their windows up to a second late (completion 1.9 and 5 times as
// long, one run); let ahead while the debt before it was within the burst,
// the Poisson crowd with a seed cost the origin 5.4, 5.6 and 10.7 copies (three
// runs) against 2.4 to 3.2 with this rule (four; 1.7 to 8.0 without it);
// with the blocks in turn reserving one at a time (the debt then at most
// one block, so that urgent blocks went ahead at seeds too), 4.4, 11.8 and
// 11.9 (three runs).
const (
	// urgentFor is how long an urgent want is remembered; urgentMax bounds
	// the CIDs remembered (the oldest go first).
	urgentFor = 10 * time.Second
	urgentMax = 4096
)

// urgentWants remembers the blocks peers asked for with the top priority.
// It is safe for concurrent use; a nil *urgentWants remembers nothing.
type urgentWants struct {
	mu  sync.Mutex
	at  map[cid.Cid]time.Time
	off bool // stopped: nothing is noted
}

func newUrgentWants() *urgentWants { return &urgentWants{at: make(map[cid.Cid]time.Time)} }

// note remembers the urgent want-blocks of m, received at now. (A cancel
// is not heeded: another peer may want the block as urgently, and the
// entry is forgotten after urgentFor.)
func (u *urgentWants) note(m bsmsg.BitSwapMessage, now time.Time) {
	if u == nil {
		return
	}
	wl := m.Wantlist()
	if len(wl) == 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.off {
		return
	}
	for _, e := range wl {
		if e.Cancel || e.Priority != topPriority || e.WantType != bspb.Message_Wantlist_Block {
			continue
		}
		if _, ok := u.at[e.Cid]; !ok && len(u.at) >= urgentMax {
			u.pruneLocked(now)
		}
		u.at[e.Cid] = now
	}
}

// urgent reports whether a peer asked for c urgently within urgentFor of
// now.
func (u *urgentWants) urgent(c cid.Cid, now time.Time) bool {
	if u == nil {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	at, ok := u.at[c]
	return ok && now.Sub(at) < urgentFor
}

// stop forgets the urgent wants and notes no more: every block is served
// in its turn.
func (u *urgentWants) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.off = true
	clear(u.at)
}

// pruneLocked makes room for one more: it forgets the wants older than
// urgentFor, and if none is, the oldest.
func (u *urgentWants) pruneLocked(now time.Time) {
	var oldest cid.Cid
	var oldestAt time.Time
	for c, at := range u.at {
		if now.Sub(at) >= urgentFor {
			delete(u.at, c)
			continue
		}
		if oldestAt.IsZero() || at.Before(oldestAt) {
			oldest, oldestAt = c, at
		}
	}
	if len(u.at) >= urgentMax && oldest.Defined() {
		delete(u.at, oldest)
	}
}
