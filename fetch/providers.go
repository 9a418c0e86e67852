// The Reader's providers: found through Config.Providers, connected as
// they are found, dialled once their addresses are known.

package fetch

import (
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// findProviders asks Config.Providers who holds the root and connects to
// them, so that the bitswap session's wants reach them.
func (r *Reader) findProviders() {
	p := r.f.cfg.Providers
	if p == nil {
		r.prov = provNone
		return
	}
	ch := p.FindProvidersAsync(r.ctx, r.t.Cid, 16)
	timer := time.NewTimer(r.f.cfg.ProviderWait)
	defer timer.Stop()
	select {
	case ai, ok := <-ch:
		if !ok {
			r.prov = provNone
			return
		}
		r.prov = provSome
		r.connect(ai)
		if !r.connectReady(ch) {
			return // the finder told all it knew
		}
	case <-timer.C:
		r.prov = provNone // none known yet: the origin goes at once
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			select {
			case ai, ok := <-ch:
				if !ok {
					return
				}
				r.mu.Lock()
				r.prov = provSome
				r.mu.Unlock()
				r.connect(ai)
			case <-r.ctx.Done():
				return // a discovery that does not close its channel must not hold Close up
			}
		}
	}()
}

// connectReady connects the providers ch has ready, so that the fetch
// knows at Open every provider the finder had at hand (a provider table
// sends them all at once): whether one holds the whole content decides
// whether the fetch announces itself (earlyAnnounceLocked). It reports
// whether ch is still open.
func (r *Reader) connectReady(ch <-chan peer.AddrInfo) bool {
	for {
		select {
		case ai, ok := <-ch:
			if !ok {
				return false
			}
			r.connect(ai)
		default:
			return true
		}
	}
}

func (r *Reader) connect(ai peer.AddrInfo) {
	h := r.f.cfg.Host
	if ai.ID == h.ID() || r.f.guard.isPenalised(ai.ID) {
		return
	}
	r.learnAddrs(ai)
	r.mu.Lock()
	r.provs = append(r.provs, ai.ID)
	dial := !r.addrlessLocked(ai.ID) && r.admitDialLocked(ai.ID)
	r.mu.Unlock()
	if dial {
		r.dial(ai, true)
	}
}

// addrlessLocked reports whether p, a provider just listed, cannot be
// dialled yet: not connected, and no address known (a peer the provider
// table knows by ID only, its addresses still on their way by gossip). It
// is then noted, and dialled once its addresses arrive
// (dialAddrlessLocked). Dialled at once, it failed ("no addresses") and,
// already listed, was never dialled again: a crowd member whose fetch
// announcement came before its addresses stayed out of reach of this
// node for the whole fetch. The caller holds mu.
func (r *Reader) addrlessLocked(p peer.ID) bool {
	h := r.f.cfg.Host
	if h.Network().Connectedness(p) == network.Connected || len(h.Peerstore().Addrs(p)) > 0 {
		return false
	}
	if len(r.addrless) == 0 {
		r.addrlessSince = time.Now()
	}
	r.addrless = append(r.addrless, p)
	r.addrlessAt, r.addrlessGap = time.Time{}, 0 // look soon again
	return true
}

// dialAddrlessLocked dials the providers addrlessLocked noted whose
// addresses have arrived and forgets those connected meanwhile (they
// dialled this node) or penalised. Nothing says when addresses arrive, so
// while any are left it looks again at the times addrlessPoll gives: soon
// after one is noted, less often the longer it waits (a peer reachable
// only through a relay may never have an address to dial). The caller
// holds mu.
func (r *Reader) dialAddrlessLocked(p *plan, now time.Time, s *soon) {
	if len(r.addrless) == 0 {
		return
	}
	if now.Before(r.addrlessAt) {
		s.at(r.addrlessAt)
		return
	}
	h := r.f.cfg.Host
	r.addrless = slices.DeleteFunc(r.addrless, func(id peer.ID) bool {
		if r.settled(id) {
			return true
		}
		ai := h.Peerstore().PeerInfo(id)
		if len(ai.Addrs) == 0 {
			return false
		}
		if r.admitDialLocked(id) {
			p.connect = append(p.connect, ai)
		}
		return true
	})
	if len(r.addrless) > 0 {
		r.addrlessGap = addrlessPoll(r.addrlessGap, now.Sub(r.addrlessSince))
		r.addrlessAt = now.Add(r.addrlessGap)
		s.at(r.addrlessAt)
	}
}

// learnAddrs puts a provider's addresses in the peerstore before the
// provider is listed in r.provs, where the scheduler may pick it at once:
// a want sent to it (the first want, firstwant.go) dials it with what the
// peerstore holds. Left to dial's Connect, in its own goroutine, the want
// could go first and fail ("no addresses"), the provider never asked for
// the block and so never owing an answer (found by
// TestSilentProviderAskedLate on a loaded machine).
func (r *Reader) learnAddrs(ai peer.AddrInfo) {
	if len(ai.Addrs) > 0 {
		r.f.cfg.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
	}
}

// dial connects to a peer in the background, for the fetch's life;
// counted: the dial counts against Config.PeerBudget until it ends
// (admitDialLocked).
func (r *Reader) dial(ai peer.AddrInfo, counted bool) {
	h := r.f.cfg.Host
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := h.Connect(r.ctx, ai); err != nil {
			r.f.log.Debug("connect to provider", "peer", ai.ID, "err", err)
		}
		if counted {
			r.mu.Lock()
			r.countDialsLocked(-1)
			r.mu.Unlock()
		}
	}()
}
