package mesh

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// addrMemBed is an addrLimiter of 1 MiB per address over a resource
// manager that admits 512 KiB per peer.
type addrMemBed struct {
	t *testing.T
	l *addrLimiter
}

// newAddrMemBed returns an addrMemBed; its resource manager ends with t.
func newAddrMemBed(t *testing.T) *addrMemBed {
	t.Helper()
	limits := rcmgr.PartialLimitConfig{PeerDefault: rcmgr.ResourceLimits{Memory: 512 << 10}}.Build(rcmgr.InfiniteLimits)
	base, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	return &addrMemBed{t: t, l: limitAddrs(base, 0, 1<<20).(*addrLimiter)}
}

// conn opens a connection of a new peer from or to ip (dir), and a span of
// its peer's scope begun through it, as a muxer begins one per stream.
func (b *addrMemBed) conn(dir network.Direction, ip string) (network.ConnManagementScope, network.ResourceScopeSpan) {
	b.t.Helper()
	c, err := b.l.OpenConnection(dir, true, ma.StringCast("/ip4/"+ip+"/tcp/4001"))
	if err != nil {
		b.t.Fatal(err)
	}
	_, p := testutil.Key(b.t)
	if err := c.SetPeer(p); err != nil {
		b.t.Fatal(err)
	}
	s, err := c.PeerScope().BeginSpan()
	if err != nil {
		b.t.Fatal(err)
	}
	return c, s
}

// held is what the limiter charges ip.
func (b *addrMemBed) held(ip string) int64 {
	b.l.mu.Lock()
	defer b.l.mu.Unlock()
	return b.l.held[netip.PrefixFrom(netip.MustParseAddr(ip), 32)]
}

// reserve reserves kib KiB at prio in s and fails the test unless the
// outcome is want: nil, errAddrMemory (also a
// network.ErrResourceLimitExceeded), or errOther (any other refusal).
func (b *addrMemBed) reserve(what string, s network.ResourceScope, kib int, prio uint8, want error) {
	b.t.Helper()
	err := s.ReserveMemory(kib<<10, prio)
	var ok bool
	switch want {
	case nil:
		ok = err == nil
	case errAddrMemory: // refused as the resource manager refuses
		ok = errors.Is(err, errAddrMemory) && errors.Is(err, network.ErrResourceLimitExceeded)
	default:
		ok = err != nil && !errors.Is(err, errAddrMemory)
	}
	if !ok {
		b.t.Fatalf("%s: ReserveMemory(%d KiB) = %v, want %v", what, kib, err, want)
	}
}

// errOther stands for a refusal by the resource manager underneath.
var errOther = errors.New("refused by the resource manager")

// TestAddrMemory: the inbound connections of one address reserve at most
// the limit in all, through their peers' spans (a muxer's), nested spans
// and their own scopes; a refusal is the resource manager's error; freeing
// and ending a span or a connection frees its charge; a reservation at a
// lower priority stops lower; one the resource manager refuses is not
// charged; other addresses, outbound and UDP connections and loopback are
// not limited.
func TestAddrMemory(t *testing.T) {
	b := newAddrMemBed(t)
	const ip = "198.51.100.7"
	c1, s1 := b.conn(network.DirInbound, ip)
	_, s2 := b.conn(network.DirInbound, ip)
	b.reserve("first peer's window", s1, 256, 255, nil)
	b.reserve("first peer's second window", s1, 256, 255, nil)
	b.reserve("second peer's windows", s2, 512, 255, nil)
	if got := b.held(ip); got != 1<<20 {
		t.Fatalf("the address holds %d KiB, want 1024", got>>10)
	}
	c3, s3 := b.conn(network.DirInbound, ip)
	b.reserve("a third peer of the full address", s3, 256, 255, errAddrMemory)
	b.reserve("the span whose first window was refused", s3, 1, 255, errOther) // ended (addrSpan)
	s3, err := c3.PeerScope().BeginSpan()                                      // the next stream's
	if err != nil {
		t.Fatal(err)
	}
	b.reserve("the third peer's connection scope", c3, 1, 255, errAddrMemory)
	_, other := b.conn(network.DirInbound, "198.51.100.8")
	b.reserve("a peer of another address", other, 256, 255, nil)
	_, out := b.conn(network.DirOutbound, ip)
	b.reserve("an outbound connection to the full address", out, 512, 255, nil)
	q, err := b.l.OpenConnection(network.DirInbound, false, ma.StringCast("/ip4/"+ip+"/udp/4001/quic-v1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := q.(*addrScope); ok {
		t.Error("a QUIC connection is charged to its address")
	}
	q.Done()
	for i := range 3 {
		_, s := b.conn(network.DirInbound, "127.0.0.2")
		b.reserve(fmt.Sprintf("loopback peer %d", i+1), s, 512, 255, nil)
	}
	if got := b.held("127.0.0.2"); got != 0 {
		t.Errorf("loopback is charged %d KiB", got>>10)
	}

	s1.ReleaseMemory(256 << 10)
	b.reserve("the third peer after the first freed a window", s3, 256, 255, nil)
	s1.Done() // frees the window it still holds
	if got := b.held(ip); got != 768<<10 {
		t.Fatalf("after a span ended the address holds %d KiB, want 768", got>>10)
	}
	nested, err := s3.BeginSpan()
	if err != nil {
		t.Fatal(err)
	}
	b.reserve("a nested span, over half at priority 128", nested, 256, 128, errAddrMemory)
	b.reserve("a nested span at priority 255", nested, 256, 255, nil)
	c4, s4 := b.conn(network.DirInbound, ip)
	b.reserve("a fourth peer's connection scope", c4, 128, 255, errAddrMemory)
	nested.Done()
	b.reserve("the fourth peer's connection scope after a span ended", c4, 128, 255, nil)
	b.reserve("the fourth peer, to the limit", s4, 128, 255, nil)
	c4.Done() // frees the 128 KiB its scope held; its span's are held until it ends
	if got := b.held(ip); got != 896<<10 {
		t.Fatalf("after a connection ended the address holds %d KiB, want 896", got>>10)
	}
	b.reserve("the third peer's connection scope", c3, 128, 255, nil)
	c1.Done()
	s2.Done()
	s3.Done()
	s4.Done()
	c3.Done()
	if got := b.held(ip); got != 0 {
		t.Fatalf("with every span and connection ended the address holds %d KiB, want 0", got>>10)
	}
	b.reserve("a span after its end", s3, 1, 255, errOther)

	const ip2 = "198.51.100.9" // the resource manager refuses: nothing charged
	_, s5 := b.conn(network.DirInbound, ip2)
	b.reserve("a peer's windows", s5, 512, 255, nil)
	b.reserve("over the peer's limit", s5, 256, 255, errOther)
	if got := b.held(ip2); got != 512<<10 {
		t.Fatalf("after the resource manager refused, the address holds %d KiB, want 512", got>>10)
	}
}

// TestAddrMemoryPerAddr: a quarter of the system's memory, none without a
// limit of connections per address.
func TestAddrMemoryPerAddr(t *testing.T) {
	for _, c := range []struct {
		role       Role
		maxMemory  int64
		connsPerIP int
		want       int64
	}{
		{RoleSeed, 0, 0, 288 << 20},
		{RoleApp, 0, 0, 96 << 20},
		{RoleSeed, 256 << 20, 0, 96 << 20},
		{RoleSeed, 0, -1, 0},
	} {
		cfg := roleDefaults[c.role]
		cfg.Role = c.role
		if c.maxMemory != 0 {
			cfg.MaxMemory = c.maxMemory
		}
		if c.connsPerIP != 0 {
			cfg.Relay.ConnsPerIP = c.connsPerIP
		}
		if got := addrMemory(cfg, newLimiter(cfg, newAskedPeers())); got != c.want {
			t.Errorf("addrMemory(%s, MaxMemory %d MiB, ConnsPerIP %d) = %d MiB, want %d", c.role, cfg.MaxMemory>>20, cfg.Relay.ConnsPerIP, got>>20, c.want>>20)
		}
	}
}

// refusingSpan is a span that refuses every reservation and records its
// end.
type refusingSpan struct {
	network.ResourceScopeSpan
	ended bool
}

func (s *refusingSpan) ReserveMemory(int, uint8) error { return network.ErrResourceLimitExceeded }
func (s *refusingSpan) Done()                          { s.ended = true }

// TestAbandonedSpanEnded: a span whose first reservation, at priority 255
// (go-yamux's window for a new stream), is refused is ended, as go-yamux
// drops it without ending it (the peer's scope was held for ever); one
// refused a window's growth (128) or a later window is not: its stream
// goes on. Connections charged to no address (outbound, loopback, relayed)
// are wrapped for it too.
func TestAbandonedSpanEnded(t *testing.T) {
	for _, c := range []struct {
		name  string
		held  int64
		prio  uint8
		ended bool
	}{
		{"a new stream's window refused", 0, 255, true},
		{"a window's growth refused", 256 << 10, 128, false},
		{"a later window refused", 256 << 10, 255, false},
		{"a first reservation at 128 refused", 0, 128, false},
	} {
		under := &refusingSpan{}
		s := &addrSpan{ResourceScopeSpan: under}
		s.charge.held = c.held
		if err := s.ReserveMemory(256<<10, c.prio); err == nil {
			t.Fatalf("%s: the reservation was not refused", c.name)
		}
		if under.ended != c.ended {
			t.Errorf("%s: span ended %v, want %v", c.name, under.ended, c.ended)
		}
	}
	base, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.InfiniteLimits))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	l := limitAddrs(base, 0, 0)
	for _, addr := range []string{"/ip4/127.0.0.1/tcp/1", "/ip4/198.51.100.7/tcp/1",
		"/ip4/198.51.100.7/udp/1/quic-v1/p2p/12D3KooWGzHcyF5HF5ggMGRMq1yjDd4Zjvcw96DyHcnWUyaVfhfF/p2p-circuit"} {
		c, err := l.OpenConnection(network.DirOutbound, true, ma.StringCast(addr))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.(*addrScope); !ok {
			t.Errorf("an outbound yamux connection to %s is not wrapped: its muxer's abandoned spans are never ended", addr)
		}
		c.Done()
	}
}
