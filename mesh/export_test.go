package mesh

import (
	"net/netip"
	"strings"
)

// GatewayParkCheck is how long a request waiting for the gateway's
// MaxBuffer may wait for a blocked write to be parked (gatewayParkCheck),
// for tests.
const GatewayParkCheck = gatewayParkCheck

// BootstrapTag is the connection manager's protection tag of bootstrap
// peers (bootstrapTag), for tests: gossipsub protects its mesh peers under
// tags of its own, so IsProtected(p, "") says nothing of ours.
const BootstrapTag = bootstrapTag

// FollowRetry is followRetry, for tests.
var FollowRetry = followRetry

// UnaskedStreamsInbound and UnaskedPeerMemory are the inbound streams and
// the memory a peer not asked for blocks holds at most, and
// SenderStreamsInbound and SenderPeerMemory those of a peer asked
// (limits.go), for tests.
const (
	UnaskedStreamsInbound = unaskedStreamsInbound
	UnaskedPeerMemory     = unaskedPeerMemory
	SenderStreamsInbound  = peerStreamsInbound
	SenderPeerMemory      = senderPeerMemory
)

// NetworkChanged does what the node does when the machine's network
// changes (netwatch.go), as if the machine's addresses were now addrs.
func (n *Node) NetworkChanged(addrs ...netip.Addr) {
	st := netState{addrs: make(map[netip.Addr]bool)}
	var ks []string
	for _, a := range addrs {
		st.addrs[a] = true
		ks = append(ks, a.String())
	}
	st.key = strings.Join(ks, " ")
	n.networkChanged(st)
}

// LiftHandshakeExempt makes loopback count against the limits per address
// of handshakes and memory (handshakes.go, addrmem.go) for nodes made
// until restore is called, so that a test can flood from 127.0.0.2 and up.
func LiftHandshakeExempt() (restore func()) {
	was := handshakeExempt
	handshakeExempt = nil
	return func() { handshakeExempt = was }
}

// AddrMemory is the memory n's inbound connections from the IPv4 address
// ip hold against n's limit of memory per address, and that limit (0: no
// limit), for tests.
func AddrMemory(n *Node, ip string) (held, limit int64) {
	l, ok := n.host.Network().ResourceManager().(*addrLimiter)
	if !ok {
		return 0, 0
	}
	key := netip.PrefixFrom(netip.MustParseAddr(ip), 32)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[key], l.memory
}
