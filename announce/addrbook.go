package announce

import (
	"container/list"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// maxAddrAuthors bounds the authors whose ADDRS addresses are kept in the
// host's peerstore at once (a variable for tests). Keys are free: without a
// bound, one attacker publishing ADDRS under a new key per message would
// fill the peerstore with up to MaxAddrs addresses of 1 KiB per key, until
// libp2p's own cap (a million addresses) dropped everyone's, honest peers'
// addresses from ADDRS, the DHT and identify included.
var maxAddrAuthors = 1024

// addrBook writes the addresses of ADDRS messages into the peerstore,
// keeping those of at most maxAddrAuthors authors, the most recent: a new
// ADDRS replaces its author's earlier addresses, and the author heard from
// least recently loses its own when another is added. Addresses of a peer
// this host is connected to are left in place (identify keeps them).
type addrBook struct {
	net network.Network

	mu    sync.Mutex
	order *list.List // of *addrEntry, most recent first
	by    map[peer.ID]*list.Element
}

// addrEntry is one author's addresses as the last ADDRS gave them.
type addrEntry struct {
	peer  peer.ID
	addrs []ma.Multiaddr
}

func newAddrBook(n network.Network) *addrBook {
	return &addrBook{net: n, order: list.New(), by: make(map[peer.ID]*list.Element)}
}

// record sets p's addresses to addrs for ttl, at most AddrsTTL.
func (b *addrBook) record(p peer.ID, addrs []ma.Multiaddr, ttl time.Duration) {
	ttl = min(ttl, AddrsTTL)
	b.mu.Lock()
	defer b.mu.Unlock()
	ps := b.net.Peerstore()
	if el, ok := b.by[p]; ok {
		e := el.Value.(*addrEntry)
		b.forget(p, without(e.addrs, addrs))
		e.addrs = addrs
		b.order.MoveToFront(el)
	} else {
		for b.order.Len() >= maxAddrAuthors {
			old := b.order.Remove(b.order.Back()).(*addrEntry)
			delete(b.by, old.peer)
			b.forget(old.peer, old.addrs)
		}
		b.by[p] = b.order.PushFront(&addrEntry{peer: p, addrs: addrs})
	}
	ps.AddAddrs(p, addrs, ttl)
}

// forget removes addrs of p from the peerstore unless p is connected.
func (b *addrBook) forget(p peer.ID, addrs []ma.Multiaddr) {
	if len(addrs) == 0 || b.net.Connectedness(p) == network.Connected {
		return
	}
	b.net.Peerstore().SetAddrs(p, addrs, 0)
}

// without returns the addresses of a that are not in b.
func without(a, b []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, x := range a {
		if !slices.ContainsFunc(b, x.Equal) {
			out = append(out, x)
		}
	}
	return out
}
