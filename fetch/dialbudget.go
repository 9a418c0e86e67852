package fetch

import (
	"math/rand/v2"
	"slices"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// How many peers fetches dial (Config.PeerBudget).
//
// A fetch dials its providers and the members of its stripe as it learns of
// them, and the connections outlive it. With members' addresses in their
// announcements (mesh AnnounceAddrs), every node of the demo's 50-app flash
// crowd came to be connected to every other: upload spread evenly, but each
// node spent its serving cap on 49 peers' wants, much of it on copies sent
// after another source had delivered (peers sent 1.85 to 2.1 bytes per
// byte kept), and the crowd took 67 to 88 s. Dialling only while the host has fewer than 8
// peers, the same crowd took 43 and 50 s (origin copies 4.66 and 4.94;
// 1.26 and 1.60 bytes sent per byte kept). Without addresses (the default)
// each app knows the three it was introduced to and those that dial it, and
// the budget changes little: 5.02 and 5.05 copies in 56 and 55 s, against
// 7.82 and 4.92 in 61 and 56 s; the default demo's offload median 0.9418
// against 0.9416 (four runs each). A fetch that has fewer than minSources of
// its providers connected dials regardless: a node connected to peers that
// hold nothing of the content must still reach those that do.

// minSources is how many of its providers a fetch dials whatever the
// host's peers.
const minSources = 2

// admitDialLocked reports whether provider p, which has addresses to dial,
// is dialled now (mayDialLocked); the dial counts against the budget until
// it ends. A connected p needs no dial; one over the budget is kept as a
// spare (dialSpareLocked). The caller holds mu.
func (r *Reader) admitDialLocked(p peer.ID) bool {
	if r.f.cfg.Host.Network().Connectedness(p) == network.Connected {
		return false
	}
	if !r.mayDialLocked() {
		r.spare = append(r.spare, p)
		return false
	}
	r.countDialsLocked(1)
	return true
}

// mayDialLocked reports whether the fetch may dial another provider: the
// host has fewer peers connected or being dialled than Config.PeerBudget,
// or the fetch has fewer than minSources of its providers connected (not
// penalised: a fetch among liars still reaches the honest) or being
// dialled. The caller holds mu.
func (r *Reader) mayDialLocked() bool {
	budget := r.f.cfg.PeerBudget
	net := r.f.cfg.Host.Network()
	if budget < 0 || len(net.Peers())+int(r.f.dialing.Load()) < budget {
		return true
	}
	n := r.dialing
	for _, p := range r.provs {
		if n >= minSources {
			return false
		}
		if net.Connectedness(p) == network.Connected && !r.f.guard.isPenalised(p) {
			n++
		}
	}
	return n < minSources
}

// dialSpareLocked dials spares, picked at random (every node of a crowd
// lists the members in much the same order), while mayDialLocked allows;
// it forgets those connected meanwhile (they dialled this node) or
// penalised. The caller holds mu.
func (r *Reader) dialSpareLocked(p *plan) {
	if len(r.spare) == 0 {
		return
	}
	h := r.f.cfg.Host
	r.spare = slices.DeleteFunc(r.spare, r.settled)
	for len(r.spare) > 0 && r.mayDialLocked() {
		k := rand.IntN(len(r.spare))
		id := r.spare[k]
		r.spare[k] = r.spare[len(r.spare)-1]
		r.spare = r.spare[:len(r.spare)-1]
		if ai := h.Peerstore().PeerInfo(id); len(ai.Addrs) > 0 {
			r.countDialsLocked(1)
			p.connect = append(p.connect, ai)
		}
	}
}

// settled reports whether a provider waiting to be dialled (addrless, a
// spare) needs no dial any more: connected meanwhile (it dialled this
// node) or penalised.
func (r *Reader) settled(p peer.ID) bool {
	return r.f.cfg.Host.Network().Connectedness(p) == network.Connected || r.f.guard.isPenalised(p)
}

// countDialsLocked adds n (negative: takes back) to the dials under way
// of the fetch and of the Fetcher. The caller holds mu.
func (r *Reader) countDialsLocked(n int) {
	r.dialing += n
	r.f.dialing.Add(int64(n))
}
