package mesh

import (
	"errors"
	"strconv"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// TestHandshakeLimiter: an address holds at most per inbound connections
// before their peer is named; naming the peer or ending the connection
// frees a place; outbound connections, loopback, other addresses, UDP
// (whose source address can be forged) and relayed connections (whose
// address is the relay's) do not count; an IPv6 /56 counts as
// one address.
func TestHandshakeLimiter(t *testing.T) {
	base, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.InfiniteLimits))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	l := limitAddrs(base, 3, 0)
	open := func(dir network.Direction, addr string) (network.ConnManagementScope, error) {
		return l.OpenConnection(dir, true, ma.StringCast(addr))
	}
	var held []network.ConnManagementScope
	for i := range 3 {
		s, err := open(network.DirInbound, "/ip4/198.51.100.7/tcp/"+strconv.Itoa(i+1))
		if err != nil {
			t.Fatalf("handshake %d of 3: %v", i+1, err)
		}
		held = append(held, s)
	}
	for _, addr := range []string{"/ip4/198.51.100.7/tcp/9", "/ip4/198.51.100.7/tcp/9/ws"} {
		if _, err := open(network.DirInbound, addr); !errors.Is(err, errHandshakes) {
			t.Fatalf("a fourth handshake from the address (%s): %v, want errHandshakes", addr, err)
		}
	}
	for _, addr := range []string{"/ip4/198.51.100.8/tcp/1", "/ip4/127.0.0.2/tcp/1", "/ip6/::1/tcp/1",
		"/ip4/198.51.100.7/udp/1/quic-v1", "/ip4/198.51.100.7/udp/1/webrtc-direct",
		"/ip4/198.51.100.7/tcp/1/p2p/12D3KooWGzHcyF5HF5ggMGRMq1yjDd4Zjvcw96DyHcnWUyaVfhfF/p2p-circuit"} {
		if _, err := open(network.DirInbound, addr); err != nil {
			t.Errorf("inbound from %s: %v", addr, err)
		}
	}
	if _, err := open(network.DirOutbound, "/ip4/198.51.100.7/tcp/9"); err != nil {
		t.Errorf("outbound to the full address: %v", err)
	}
	_, p := testutil.Key(t)
	if err := held[0].SetPeer(p); err != nil {
		t.Fatal(err)
	}
	s, err := open(network.DirInbound, "/ip4/198.51.100.7/tcp/9")
	if err != nil {
		t.Fatalf("after one handshake named its peer: %v", err)
	}
	held[0].Done() // the named connection ends: nothing more to count off
	if _, err := open(network.DirInbound, "/ip4/198.51.100.7/tcp/10"); !errors.Is(err, errHandshakes) {
		t.Fatalf("a connection whose peer was named, ended, freed a second place: %v", err)
	}
	s.Done()
	if _, err := open(network.DirInbound, "/ip4/198.51.100.7/tcp/10"); err != nil {
		t.Fatalf("after a handshake ended: %v", err)
	}
	for i, addr := range []string{"/ip6/2001:db8:0:1::1/tcp/1", "/ip6/2001:db8:0:2::1/tcp/1", "/ip6/2001:db8:0:3::1/tcp/1"} {
		if _, err := open(network.DirInbound, addr); err != nil {
			t.Fatalf("IPv6 handshake %d of 3 in one /56: %v", i+1, err)
		}
	}
	if _, err := open(network.DirInbound, "/ip6/2001:db8:0:4::1/tcp/1"); !errors.Is(err, errHandshakes) {
		t.Fatalf("a fourth handshake from the /56: %v, want errHandshakes", err)
	}
	if _, err := open(network.DirInbound, "/ip6/2001:db8:1::1/tcp/1"); err != nil {
		t.Errorf("another /56: %v", err)
	}
}

// TestHandshakesPerAddr: a sixteenth of the connections an address may
// hold, at least 8, none without a per-address limit.
func TestHandshakesPerAddr(t *testing.T) {
	for _, c := range []struct{ connsPerIP, want int }{{256, 16}, {8, 8}, {1024, 64}, {-1, 0}} {
		cfg := Config{Relay: RelayLimits{ConnsPerIP: c.connsPerIP}}
		if got := handshakesPerAddr(cfg); got != c.want {
			t.Errorf("ConnsPerIP %d: %d handshakes per address, want %d", c.connsPerIP, got, c.want)
		}
	}
}
