package mesh

import (
	"errors"
	"net/netip"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Handshakes in progress, per address. An inbound connection sits in the
// resource manager's transient scope from its accept until its security
// handshake names the peer (SetPeer), and go-libp2p gives a TCP or
// WebSocket handshake 15 s (the upgrader's accept timeout, which libp2p.New
// cannot change). go-libp2p bounds connections per address in all and
// their rate, not those still in their handshake: a connection that names
// noise and then sends nothing holds a transient slot for 15 s, and a few
// addresses at the rate limit (each holding 64 at once, at a seed's 4.3 a
// second) took every inbound slot a seed has (fault
// TestFaultStalledHandshakesFewAddresses: four addresses). So an address (an IPv4
// address, an IPv6 /56, as the per-address limits count) holds at most
// handshakesPerAddr inbound connections in their handshake; one more is
// refused at its accept, before any handshake work. A seed's 16 is far
// above what an office of browsers behind one address has in flight (a
// handshake takes a few round trips), and filling a seed's 1,280 inbound
// connections now takes 80 addresses. Loopback is exempt, as from
// go-libp2p's own per-address limits. Only TCP connections (WebSockets
// included; not relayed ones, whose address is the relay's) count: a UDP
// source address can be forged, and counting QUIC's
// or WebRTC's first packets against an address would let anyone lock that
// address out by sending them in its name (quic-go makes a client prove
// its address under load instead).

// errHandshakes refuses an inbound connection whose address holds its
// handshake limit.
var errHandshakes = errors.New("mesh: too many handshakes in progress from this address")

// handshakeExempt lists the addresses without per-address limits of
// handshakes and memory: loopback (a variable for tests).
var handshakeExempt = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// handshakesPerAddr is the handshake limit per address for cfg: a
// sixteenth of the connections an address may hold, at least 8 (16 on a
// seed, 8 on an app); none when connections per address are not limited.
func handshakesPerAddr(cfg Config) int {
	if cfg.Relay.ConnsPerIP < 0 {
		return 0
	}
	return max(8, cfg.Relay.ConnsPerIP/16)
}

// addrLimiter is a resource manager that bounds what one address holds
// through its inbound TCP connections (key): at most per of them in their
// handshake (one more is refused at its accept), and at most memory bytes
// reserved by them and their streams (addrmem.go). Zero is no limit. Safe
// for concurrent use.
type addrLimiter struct {
	network.ResourceManager
	per    int
	memory int64
	exempt []netip.Prefix

	mu   sync.Mutex
	open map[netip.Prefix]int
	held map[netip.Prefix]int64
}

// limitAddrs wraps rm with limits of per handshakes and memory bytes per
// address (0: no limit); with neither, it still ends the spans go-yamux
// abandons (addrSpan).
func limitAddrs(rm network.ResourceManager, per int, memory int64) network.ResourceManager {
	return &addrLimiter{
		ResourceManager: rm, per: max(per, 0), memory: max(memory, 0), exempt: handshakeExempt,
		open: make(map[netip.Prefix]int), held: make(map[netip.Prefix]int64),
	}
}

// OpenConnection opens the connection's scope. An inbound TCP one counts
// against its address: as a handshake until its peer is named or it ends,
// and for the memory it reserves until it ends.
func (l *addrLimiter) OpenConnection(dir network.Direction, usefd bool, endpoint ma.Multiaddr) (network.ConnManagementScope, error) {
	key, ok := l.key(dir, endpoint)
	if !ok {
		s, err := l.ResourceManager.OpenConnection(dir, usefd, endpoint)
		if err != nil || !yamuxed(endpoint) {
			return s, err
		}
		return &addrScope{ConnManagementScope: s}, nil // its muxer's spans ended when refused (addrSpan)
	}
	if !l.begin(key) {
		return nil, errHandshakes
	}
	s, err := l.ResourceManager.OpenConnection(dir, usefd, endpoint)
	if err != nil {
		l.done(key)
		return nil, err
	}
	return &addrScope{ConnManagementScope: s, charge: addrCharge{l: l, key: key}}, nil
}

// key is the address an inbound connection from endpoint counts against,
// and whether it counts.
func (l *addrLimiter) key(dir network.Direction, endpoint ma.Multiaddr) (netip.Prefix, bool) {
	if dir != network.DirInbound || endpoint == nil {
		return netip.Prefix{}, false
	}
	if !has(endpoint, ma.P_TCP) || has(endpoint, ma.P_CIRCUIT) {
		return netip.Prefix{}, false // not TCP, or relayed: its address is the relay's
	}
	a, ok := ipOf(endpoint)
	if !ok {
		return netip.Prefix{}, false
	}
	for _, p := range l.exempt {
		if p.Contains(a) {
			return netip.Prefix{}, false
		}
	}
	bits := 32
	if a.Is6() {
		bits = 56
	}
	key, err := a.Prefix(bits)
	return key, err == nil
}

// yamuxed reports whether a connection to or from endpoint is muxed by
// yamux: over TCP (WebSockets included) or relayed.
func yamuxed(endpoint ma.Multiaddr) bool {
	return has(endpoint, ma.P_TCP) || has(endpoint, ma.P_CIRCUIT)
}

// has reports whether endpoint has a component of protocol code.
func has(endpoint ma.Multiaddr, code int) bool {
	_, err := endpoint.ValueForProtocol(code)
	return err == nil
}

// begin counts a handshake of key, or reports false if key holds its
// limit already.
func (l *addrLimiter) begin(key netip.Prefix) bool {
	if l.per == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key] >= l.per {
		return false
	}
	l.open[key]++
	return true
}

// done counts off one handshake of key.
func (l *addrLimiter) done(key netip.Prefix) {
	if l == nil || l.per == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key]--; l.open[key] <= 0 {
		delete(l.open, key)
	}
}

// addrScope is the scope of a connection yamux muxes. An inbound one
// with an address to charge (charge.l set) counts against it as a
// handshake until SetPeer or Done, and for the memory reserved through it
// (addrmem.go) until each reservation is released or its scope ends; on
// every one the spans go-yamux abandons are ended (addrSpan).
type addrScope struct {
	network.ConnManagementScope
	charge addrCharge
	once   sync.Once
}

// release counts off the connection's handshake, once.
func (s *addrScope) release() { s.once.Do(func() { s.charge.l.done(s.charge.key) }) }

// SetPeer ends the handshake's count and names the peer.
func (s *addrScope) SetPeer(p peer.ID) error {
	s.release()
	return s.ConnManagementScope.SetPeer(p)
}

// Done ends the handshake's count, if still counted, and the scope, and
// frees the memory the scope held at its address (go-libp2p frees a
// scope's memory as it ends).
func (s *addrScope) Done() {
	s.release()
	s.ConnManagementScope.Done()
	s.charge.settle()
}
