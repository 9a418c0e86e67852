package announce

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/meshcdn/meshcdn/store"
)

// TestMDNSInNetns checks that two peers of a mesh that are not connected
// find each other with mDNS and learn each other's content. mDNS multicasts
// on every interface, so the test runs only when MESHCDN_MDNS_NETNS=1 and
// every interface is loopback, that is inside a network namespace of its
// own:
//
//	go test -c -race -o /tmp/announce.test ./announce/
//	unshare -n sh -c 'ip link set lo up && ip link set lo multicast on &&
//	  ip route add 224.0.0.0/4 dev lo &&
//	  MESHCDN_MDNS_NETNS=1 /tmp/announce.test -test.run TestMDNSInNetns -test.v'
func TestMDNSInNetns(t *testing.T) {
	if os.Getenv("MESHCDN_MDNS_NETNS") != "1" {
		t.Skip("mDNS multicasts on every interface: run inside `unshare -n` with MESHCDN_MDNS_NETNS=1 (see the comment)")
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback == 0 {
			t.Fatalf("interface %s is not loopback: refusing to multicast outside a namespace of our own", ifc.Name)
		}
	}
	type peerT struct {
		st *store.Store
		a  *Announcer
	}
	start := func(name string) peerT {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		st, err := store.New(store.Config{InMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		// MDNS left at its default: On.
		a, err := New(Config{Name: name, Host: h, Holdings: st, DisableDHT: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return peerT{st, a}
	}
	// p3 is in another mesh on the same LAN: it advertises another mDNS
	// service, so p1 and p2 never connect to it.
	p3 := start("elsewhere")
	p1, p2 := start("lan"), start("lan")
	begin := time.Now()
	c, err := p1.st.Import(context.Background(), strings.NewReader("on the LAN"), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	awaitProvider(t, &tnode{h: p2.a.host, a: p2.a}, c.Root, p1.a.host.ID())
	t.Logf("unconnected peer found through mDNS and learned the content in %v", time.Since(begin))
	for _, p := range []peerT{p1, p2} {
		if got := p.a.host.Network().Connectedness(p3.a.host.ID()); got == network.Connected {
			t.Fatalf("a peer of mesh lan connected to the peer of mesh elsewhere")
		}
	}
}
