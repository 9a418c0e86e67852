package fetch

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Providers found during a fetch.
//
// A Reader looks up the content's providers when it opens. A long fetch
// (a large file, peers that serve slowly) then never asked the holders
// that finished after it opened: bitswap's own search is off, and a
// session's want-haves reach only the peers it knows and those connected.
// So a fetch that waits on peers looks the providers up again every
// provRefresh (policy.go, lookAgain), connects to up to provRefreshNew of
// those it did not know, chosen at random (every node of a crowd sees the
// same table, and the first of its list would take the crowd's wants),
// and asks the leaves it has waited on for a PeerTimeout again on a new
// bitswap session, whose want-haves reach the new providers
// (TestLateProviderAsked: a slow provider alone stalled the fetch). The
// leaf the reader waits on is asked of one new provider directly too, as
// a fetch's first leaf is (firstwant.go): the session picks among the
// peers that said HAVE at random, and a new provider's HAVEs are not all
// told to it until it has delivered (promises.go), so the want-block often
// went to the slow provider again and the fetch failed after StallTimeout
// (one run in 20). In a
// 50-app flash crowd it found new providers in only one fetch: the
// crowd's members are connected already.

// refreshDueLocked reports whether the providers are to be looked up
// again now (lookAgain), and if so notes the lookup. The caller holds mu.
func (r *Reader) refreshDueLocked(now time.Time, peerWaiting bool, s *soon) bool {
	known := r.f.cfg.Providers != nil && r.prov == provSome
	if !lookAgain(known, peerWaiting, r.provAt, now, s) {
		return false
	}
	r.provAt = now
	return true
}

// refreshProviders looks the providers up again, connects to new ones and,
// if there were any, has the leaves waiting on peers asked again. It runs
// in its own goroutine, counted in r.wg.
func (r *Reader) refreshProviders() {
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(r.ctx, r.f.cfg.ProviderWait)
	defer cancel()
	var fresh []peer.AddrInfo
	for ai := range r.f.cfg.Providers.FindProvidersAsync(ctx, r.t.Cid, 0) {
		if ai.ID != r.f.cfg.Host.ID() && !r.f.guard.isPenalised(ai.ID) {
			fresh = append(fresh, ai)
		}
	}
	r.mu.Lock()
	fresh = slices.DeleteFunc(fresh, func(ai peer.AddrInfo) bool { return slices.Contains(r.provs, ai.ID) })
	rand.Shuffle(len(fresh), func(i, j int) { fresh[i], fresh[j] = fresh[j], fresh[i] })
	fresh = fresh[:min(len(fresh), provRefreshNew)]
	var dial []peer.AddrInfo
	for _, ai := range fresh {
		r.learnAddrs(ai) // before the scheduler can pick it
		r.provs = append(r.provs, ai.ID)
		if !r.addrlessLocked(ai.ID) {
			dial = append(dial, ai)
		}
	}
	again := 0
	if len(fresh) > 0 {
		now := time.Now()
		again = r.askAgainLocked(now, 0, len(r.st), false, func(i int) bool { return now.Sub(r.st[i].peerAt) >= r.f.cfg.PeerTimeout })
		if cur := r.curLeaf(); again > 0 && !r.waitSince.IsZero() && cur < len(r.st) && r.st[cur].peer == nil && len(dial) > 0 {
			r.retarget, r.retargetLeaf = dial[0].ID, cur // asked directly too (firstwant.go)
		}
	}
	r.mu.Unlock()
	for _, ai := range dial {
		r.dial(ai, false)
	}
	if again > 0 {
		r.f.log.Debug("leaves asked again of new providers", "cid", r.t.Cid, "leaves", again)
		r.wake()
	}
}
