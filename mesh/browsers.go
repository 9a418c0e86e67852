package mesh

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// withBrowserAddrs returns addrs followed by a WebRTC-direct and a
// WebTransport listen address (UDP, port chosen by the system) for every IP
// address of addrs that has no address of that transport yet: what
// Config.BrowserTransports adds. Addresses that do not parse or do not start
// with /ip4 or /ip6 are passed through untouched (validate reports the
// former). The result never shares addrs's backing array.
func withBrowserAddrs(addrs []string) []string {
	out := append([]string(nil), addrs...)
	type ip struct{ proto, value string }
	var order []ip
	has := map[ip]*[2]bool{} // WebRTC-direct, WebTransport
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil || len(a) == 0 {
			continue
		}
		first := a[0]
		if c := first.Protocol().Code; c != ma.P_IP4 && c != ma.P_IP6 {
			continue
		}
		k := ip{first.Protocol().Name, first.Value()}
		if has[k] == nil {
			has[k] = new([2]bool)
			order = append(order, k)
		}
		if _, err := a.ValueForProtocol(ma.P_WEBRTC_DIRECT); err == nil {
			has[k][0] = true
		}
		if _, err := a.ValueForProtocol(ma.P_WEBTRANSPORT); err == nil {
			has[k][1] = true
		}
	}
	for _, k := range order {
		base := "/" + k.proto + "/" + k.value + "/udp/0"
		if !has[k][0] {
			out = append(out, base+"/webrtc-direct")
		}
		if !has[k][1] {
			out = append(out, base+"/quic-v1/webtransport")
		}
	}
	return out
}

// summaryHost is the host the summary service answers from: the same host,
// but a holder's addresses come out of its peerstore in summaryOrder, so
// that the eight an answer carries (announce.MaxHolderAddrs) are ones the
// asker can use. Unordered, they came in the peerstore's map order: a
// desktop app listening on TCP, QUIC, WebTransport and WebRTC-direct on
// loopback, one IPv4 and one IPv6 address has 16, and its LAN WebRTC-direct
// address was often left out of the answer a browser page asks for.
func summaryHost(h host.Host) host.Host {
	return orderedHost{Host: h, ps: orderedPeerstore{Peerstore: h.Peerstore()}}
}

type orderedHost struct {
	host.Host
	ps orderedPeerstore
}

func (h orderedHost) Peerstore() peerstore.Peerstore { return h.ps }

type orderedPeerstore struct{ peerstore.Peerstore }

func (ps orderedPeerstore) Addrs(p peer.ID) []ma.Multiaddr {
	return summaryOrder(ps.Peerstore.Addrs(p))
}

// summaryOrder sorts addrs, in place, for a summary answer: addresses other
// peers can reach (not loopback, not link-local) first; then one transport
// after another, WebRTC-direct, WebTransport, QUIC, TCP, the rest, so that
// browsers on the holder's LAN and native peers each find theirs in the
// first eight. Equal ones keep their order.
func summaryOrder(addrs []ma.Multiaddr) []ma.Multiaddr {
	rank := func(a ma.Multiaddr) int {
		r := 4
		switch {
		case hasProtocol(a, ma.P_WEBRTC_DIRECT):
			r = 0
		case hasProtocol(a, ma.P_WEBTRANSPORT):
			r = 1
		case hasProtocol(a, ma.P_QUIC_V1):
			r = 2
		case hasProtocol(a, ma.P_TCP):
			r = 3
		}
		if manet.IsIPLoopback(a) || manet.IsIP6LinkLocal(a) {
			r += 10
		}
		return r
	}
	slices.SortStableFunc(addrs, func(a, b ma.Multiaddr) int { return rank(a) - rank(b) })
	return addrs
}

func hasProtocol(a ma.Multiaddr, code int) bool {
	_, err := a.ValueForProtocol(code)
	return err == nil
}
