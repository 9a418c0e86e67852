package announce

import (
	"container/list"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
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

// record sets p's addresses to addrs for ttl, at most AddrsTTL, those
// this host would dial in good faith only (dialable).
func (b *addrBook) record(p peer.ID, addrs []ma.Multiaddr, ttl time.Duration) {
	ttl = min(ttl, AddrsTTL)
	addrs = slices.DeleteFunc(slices.Clone(addrs), func(a ma.Multiaddr) bool { return !dialable(a, b.net) })
	if len(addrs) == 0 {
		return
	}
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

// dialable reports whether an address an ADDRS gave is one to dial: an
// ADDRS names any address its author likes, and every node fetching what
// the author announced dials it, so that a forged one made every app dial a
// service of its machine (127.0.0.1:PORT), of its LAN, or a third party
// (the audit: 4 keys of 8 addresses each, 32 TCP connections per app per
// fetch). Kept: a public address or a DNS name; a loopback address only by
// a host that itself listens on loopback alone (nodes of one machine: tests,
// the demo); a private one (10/8, 172.16/12, 192.168/16, 100.64/10,
// fc00::/7) only by a host that has an address in the same /24 (IPv4) or
// /64 (IPv6). Never an unspecified, link-local or multicast one.
func dialable(a ma.Multiaddr, n network.Network) bool {
	ip, err := manet.ToIP(a)
	if err != nil {
		dns := false
		for _, c := range a {
			switch c.Protocol().Code {
			case ma.P_DNS, ma.P_DNS4, ma.P_DNS6, ma.P_DNSADDR:
				dns = true
			}
		}
		return dns
	}
	switch {
	case ip.IsUnspecified(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(), ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return false
	case ip.IsLoopback():
		return loopbackOnly(n)
	case ip.IsPrivate() || cgnat.Contains(ip):
		return nearOwn(ip, n)
	}
	return true
}

// cgnat is the shared address space of carrier-grade NAT (RFC 6598).
var cgnat = &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

// loopbackOnly reports whether n listens on loopback addresses alone.
func loopbackOnly(n network.Network) bool {
	own := n.ListenAddresses()
	for _, a := range own {
		if ip, err := manet.ToIP(a); err == nil && !ip.IsLoopback() {
			return false
		}
	}
	return len(own) > 0
}

// nearOwn reports whether n has an address in ip's /24 (IPv4) or /64
// (IPv6): a peer of its own network.
func nearOwn(ip net.IP, n network.Network) bool {
	bits, size := 64, 128
	if ip.To4() != nil {
		bits, size = 24, 32
	}
	mask := net.CIDRMask(bits, size)
	own, err := n.InterfaceListenAddresses()
	if err != nil {
		return false
	}
	for _, a := range own {
		if o, err := manet.ToIP(a); err == nil && o.Mask(mask).Equal(ip.Mask(mask)) {
			return true
		}
	}
	return false
}
