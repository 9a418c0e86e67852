package mesh

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// Memory per address. Each yamux stream (TCP, WebSockets) reserves its
// 256 KiB window as it opens: go-libp2p's upgrader hands the muxer its
// connection's peer scope, and go-yamux reserves each stream's window in a
// span of it (BeginSpan, ReserveMemory at priority 255; its growth at 128),
// ended with the stream. The resource manager bounds that memory per peer
// and for the system, never per address: a peer not asked for blocks
// reserves at most 8 MiB (unaskedPeerMemory), but keys are free and a seed
// admits 256 connections from one IPv4 address (offices of browsers behind
// one NAT). Keys of one machine holding idle streams (6 MiB of windows
// each) filled a seed's 1,152 MiB (296 held 1,149; 192 are enough), after
// which a connection that opened a stream was closed, the attackers' and
// honest apps' alike, and a new app's fetch from the seed failed; at a seed
// of 384 MiB, 160 held 378-383 MiB and the seed closed the honest app's
// connection (in 4 runs of 7; fault TestFaultAddrMemory).
//
// So the TCP connections of one address (WebSockets included, relayed ones
// not; an IPv4 address, an IPv6 /56, as for handshakes) reserve at most
// addrMemory in all, through their scopes, their spans, and the spans of
// their peers' scopes that their muxers begin: a quarter of the system's
// memory (288 MiB at a seed, 96 at an app). A reservation over it is refused
// as the resource manager refuses one, at its priority (a window's growth,
// at 128, only below half of it): an inbound stream whose window is refused
// closes its connection, of that address; no other address loses anything.
// Beside the same attacks the address holds 91-96 MiB of 384 (284-287 of
// 1,152), no honest connection is closed, and the honest fetch takes
// 0.8-1.9x its baseline. Filling a seed's memory now takes four addresses.
// An honest peer's few streams reserve 1.5-1.8 MiB at a seed: 160 such peers
// fit behind one address (of the 256 connections it may hold), and the rest
// of the memory is left to the other addresses; an app's address holds 8
// connections, and its 96 MiB a sender's 80 (senderPeerMemory). No limit
// without a limit on connections per address (ConnsPerIP negative: a node
// behind a proxy sees one address); loopback is exempt, as from the
// handshake limit.
//
// What this cannot do: charge an address for what its streams' own scopes
// reserve (identify's answer, a bitswap message being read): go-libp2p
// opens a stream's scope for its peer, not its connection; those are
// bounded per peer (the same 8 MiB) and held while a message is read. Nor
// charge QUIC, WebTransport or WebRTC connections, as handshakes are not (a
// UDP source address can be forged): their streams reserve no window (QUIC
// reserves its connection window's growth as data comes, WebRTC 2.5 MiB of
// SCTP buffer per connection, in the connection's scope).

// errAddrMemory refuses a reservation over its address's memory limit; it
// is a network.ErrResourceLimitExceeded, as the resource manager's own
// refusals.
var errAddrMemory = fmt.Errorf("mesh: memory limit of the address reached: %w", network.ErrResourceLimitExceeded)

// addrMemory is the memory limit per address for cfg, whose resource
// manager limits with lim: a quarter of its system memory (288 MiB at a
// seed, 96 at an app); none (0) when connections per address are not
// limited.
func addrMemory(cfg Config, lim rcmgr.Limiter) int64 {
	if cfg.Relay.ConnsPerIP < 0 {
		return 0
	}
	return lim.GetSystemLimits().GetMemoryLimit() / 4
}

// reserve charges size bytes to key at prio (the resource manager's
// priorities: at prio p, only up to (p+1)/256 of the limit), or refuses.
func (l *addrLimiter) reserve(key netip.Prefix, size int64, prio uint8) error {
	if l == nil {
		return nil // a connection not charged to an address
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.memory > 0 && l.held[key]+size > l.memory*(1+int64(prio))/256 {
		return errAddrMemory
	}
	l.held[key] += size
	return nil
}

// unreserve frees size bytes of key's charge.
func (l *addrLimiter) unreserve(key netip.Prefix, size int64) {
	if l == nil || size == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[key] -= size; l.held[key] <= 0 {
		delete(l.held, key)
	}
}

// addrCharge is what one scope reserved against its address (none if l is
// nil: a connection not charged to one). Safe for concurrent use.
type addrCharge struct {
	l   *addrLimiter
	key netip.Prefix

	mu   sync.Mutex
	held int64
	done bool
}

// reserve reserves size bytes at prio at the address, then in the scope
// (under); if either refuses, neither holds them.
func (c *addrCharge) reserve(size int, prio uint8, under func(int, uint8) error) error {
	if size < 0 {
		return under(size, prio) // refused there
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return under(size, prio) // the scope has ended: refused there
	}
	if err := c.l.reserve(c.key, int64(size), prio); err != nil {
		return err
	}
	if err := under(size, prio); err != nil {
		c.l.unreserve(c.key, int64(size))
		return err
	}
	c.held += int64(size)
	return nil
}

// release frees size bytes in the scope (under) and at the address (no
// more than the scope holds there).
func (c *addrCharge) release(size int, under func(int)) {
	under(size)
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(max(int64(size), 0), c.held)
	c.held -= n
	c.l.unreserve(c.key, n)
}

// empty reports whether the scope holds nothing and has not ended.
func (c *addrCharge) empty() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held == 0 && !c.done
}

// settle frees at the address all the scope still holds: the scope has
// ended.
func (c *addrCharge) settle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.l.unreserve(c.key, c.held)
	c.held, c.done = 0, true
}

// span wraps s, a span begun through this charge's scope, to charge the
// same address.
func (c *addrCharge) span(s network.ResourceScopeSpan, err error) (network.ResourceScopeSpan, error) {
	if err != nil {
		return nil, err
	}
	return &addrSpan{ResourceScopeSpan: s, charge: addrCharge{l: c.l, key: c.key}}, nil
}

// ReserveMemory reserves memory in the connection's scope, charged to its
// address.
func (s *addrScope) ReserveMemory(size int, prio uint8) error {
	return s.charge.reserve(size, prio, s.ConnManagementScope.ReserveMemory)
}

// ReleaseMemory frees memory the connection's scope reserved.
func (s *addrScope) ReleaseMemory(size int) {
	s.charge.release(size, s.ConnManagementScope.ReleaseMemory)
}

// BeginSpan begins a span of the connection's scope, charged to its
// address.
func (s *addrScope) BeginSpan() (network.ResourceScopeSpan, error) {
	return s.charge.span(s.ConnManagementScope.BeginSpan())
}

// PeerScope is the scope of the connection's peer (nil until SetPeer),
// whose spans begun through it (the muxer's, one per stream) are charged
// to the connection's address.
func (s *addrScope) PeerScope() network.PeerScope {
	p := s.ConnManagementScope.PeerScope()
	if p == nil {
		return nil // an untyped nil: go-libp2p's upgrader tests it
	}
	return &addrPeerScope{PeerScope: p, charge: &s.charge}
}

// addrPeerScope is a peer's scope as one of its inbound connections hands
// it to the muxer: its spans are charged to the connection's address. What
// is reserved in the peer's scope itself is not (the muxers reserve in
// spans).
type addrPeerScope struct {
	network.PeerScope
	charge *addrCharge
}

// BeginSpan begins a span of the peer's scope, charged to the address of
// the connection it was handed through.
func (p *addrPeerScope) BeginSpan() (network.ResourceScopeSpan, error) {
	return p.charge.span(p.PeerScope.BeginSpan())
}

// addrSpan is a span charged to an address: what it reserves counts there
// until released or the span ends.
type addrSpan struct {
	network.ResourceScopeSpan
	charge addrCharge
}

// ReserveMemory reserves memory in the span, charged to its address. A
// span whose first reservation, at priority 255, is refused is ended here:
// go-yamux begins a span for each new stream and reserves its window at
// 255, and when that is refused it drops the span without ending it, which
// held a reference to the peer's scope for ever (the resource manager
// never collected the scope of a peer once refused a window; an attacker
// with new keys made one such scope per key). Ending a span twice is a
// no-op.
func (s *addrSpan) ReserveMemory(size int, prio uint8) error {
	first := s.charge.empty()
	err := s.charge.reserve(size, prio, s.ResourceScopeSpan.ReserveMemory)
	if err != nil && first && prio == network.ReservationPriorityAlways {
		s.Done()
	}
	return err
}

// ReleaseMemory frees memory the span reserved.
func (s *addrSpan) ReleaseMemory(size int) {
	s.charge.release(size, s.ResourceScopeSpan.ReleaseMemory)
}

// BeginSpan begins a span of the span, charged to the same address.
func (s *addrSpan) BeginSpan() (network.ResourceScopeSpan, error) {
	return s.charge.span(s.ResourceScopeSpan.BeginSpan())
}

// Done ends the span and frees all it held, at its address too.
func (s *addrSpan) Done() {
	s.ResourceScopeSpan.Done()
	s.charge.settle()
}
