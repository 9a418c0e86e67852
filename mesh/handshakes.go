package mesh

import (
	"errors"
	"net/netip"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
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
// TestFaultStalledHandshakes, from one address). So an address (an IPv4
// address, an IPv6 /56, as the per-address limits count) holds at most
// handshakesPerAddr inbound connections in their handshake; one more is
// refused at its accept, before any handshake work. A seed's 16 is far
// above what an office of browsers behind one address has in flight (a
// handshake takes a few round trips), and filling a seed's 1,280 inbound
// connections now takes 80 addresses. Loopback is exempt, as from
// go-libp2p's own per-address limits. Only TCP connections (WebSockets
// included) count: a UDP source address can be forged, and counting QUIC's
// or WebRTC's first packets against an address would let anyone lock that
// address out by sending them in its name (quic-go makes a client prove
// its address under load instead).

// errHandshakes refuses an inbound connection whose address holds its
// handshake limit.
var errHandshakes = errors.New("mesh: too many handshakes in progress from this address")

// handshakeExempt lists the addresses without a handshake limit: loopback
// (a variable for tests).
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

// addrLimiter is a resource manager that refuses an inbound
// connection from an address already holding per connections in their
// handshake.
type addrLimiter struct {
	network.ResourceManager
	per    int
	exempt []netip.Prefix

	mu   sync.Mutex
	open map[netip.Prefix]int
}

// limitHandshakes wraps rm with a limit of per handshakes per address (none
// if per is 0).
func limitHandshakes(rm network.ResourceManager, per int) network.ResourceManager {
	if per <= 0 {
		return rm
	}
	return &addrLimiter{ResourceManager: rm, per: per, exempt: handshakeExempt, open: make(map[netip.Prefix]int)}
}

// OpenConnection opens the connection's scope, counting an inbound one
// against its address until its peer is named or it ends.
func (l *addrLimiter) OpenConnection(dir network.Direction, usefd bool, endpoint ma.Multiaddr) (network.ConnManagementScope, error) {
	key, ok := l.key(dir, endpoint)
	if ok {
		l.mu.Lock()
		if l.open[key] >= l.per {
			l.mu.Unlock()
			return nil, errHandshakes
		}
		l.open[key]++
		l.mu.Unlock()
	}
	s, err := l.ResourceManager.OpenConnection(dir, usefd, endpoint)
	if !ok {
		return s, err
	}
	h := &addrScope{ConnManagementScope: s, l: l, key: key}
	if err != nil {
		h.release()
		return nil, err
	}
	return h, nil
}

// key is the address an inbound connection from endpoint counts against,
// and whether it counts.
func (l *addrLimiter) key(dir network.Direction, endpoint ma.Multiaddr) (netip.Prefix, bool) {
	if dir != network.DirInbound || endpoint == nil {
		return netip.Prefix{}, false
	}
	if _, err := endpoint.ValueForProtocol(ma.P_TCP); err != nil {
		return netip.Prefix{}, false // not TCP
	}
	ip, err := manet.ToIP(endpoint)
	if err != nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
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

// done counts off one handshake of key.
func (l *addrLimiter) done(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key]--; l.open[key] <= 0 {
		delete(l.open, key)
	}
}

// addrScope is an inbound connection's scope, counted against its
// address until SetPeer or Done.
type addrScope struct {
	network.ConnManagementScope
	l    *addrLimiter
	key  netip.Prefix
	once sync.Once
}

func (s *addrScope) release() { s.once.Do(func() { s.l.done(s.key) }) }

// SetPeer ends the handshake's count and names the peer.
func (s *addrScope) SetPeer(p peer.ID) error {
	s.release()
	return s.ConnManagementScope.SetPeer(p)
}

// Done ends the handshake's count, if still counted, and the scope.
func (s *addrScope) Done() {
	s.release()
	s.ConnManagementScope.Done()
}
