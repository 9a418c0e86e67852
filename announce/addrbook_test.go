package announce

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// addrsAttacker is a host on the test topic that publishes ADDRS messages
// under keys of its own making.
type addrsAttacker struct {
	topic  *pubsub.Topic
	victim *tnode
	sent   uint64
}

func newAddrsAttacker(t *testing.T, victim *tnode) *addrsAttacker {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ps, err := pubsub.NewGossipSub(ctx, h, PubSubOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := ps.Join(Topic("test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	if err := h.Connect(ctx, peer.AddrInfo{ID: victim.h.ID(), Addrs: victim.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(tp.ListPeers()) == 0 { // pubsub has no event for it
		if time.Now().After(deadline) {
			t.Fatal("the attacker never saw the victim on the topic")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &addrsAttacker{topic: tp, victim: victim}
}

// publish sends an ADDRS of addrs signed by key and waits until the victim
// has accepted it.
func (at *addrsAttacker) publish(t *testing.T, key crypto.PrivKey, id peer.ID, addrs []ma.Multiaddr) {
	t.Helper()
	msg, err := EncodeAddrs(MaxTTLSeconds*time.Second, addrs)
	if err != nil {
		t.Fatal(err)
	}
	if err := at.topic.Publish(context.Background(), msg, pubsub.WithSecretKeyAndPeerId(key, id)); err != nil {
		t.Fatal(err)
	}
	at.sent++
	deadline := time.Now().Add(10 * time.Second)
	for at.victim.a.Stats().Received < at.sent {
		if time.Now().After(deadline) {
			t.Fatalf("victim accepted %d of %d messages", at.victim.a.Stats().Received, at.sent)
		}
		time.Sleep(time.Millisecond)
	}
}

// awaitAddr waits until the victim's peerstore lists a for id: pubsub
// counts a message received when it validates it, before the read loop
// records it, and the peerstore has no event to await.
func awaitAddr(t *testing.T, victim *tnode, id peer.ID, a ma.Multiaddr) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ma.Contains(victim.h.Peerstore().Addrs(id), a) {
		if time.Now().After(deadline) {
			t.Fatalf("the victim never recorded %v for %s", a, id)
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeAddrs returns n addresses, distinct for distinct k.
func fakeAddrs(k, n int) []ma.Multiaddr {
	out := make([]ma.Multiaddr, n)
	for i := range out {
		out[i] = ma.StringCast(fmt.Sprintf("/ip4/44.%d.%d.%d/tcp/4001", k/256%256, k%256, i)) // public: kept (dialable)
	}
	return out
}

// TestAddrsSybilsBounded: ADDRS under a new key per message keep at most
// maxAddrAuthors authors' addresses in the peerstore (without the bound,
// every key's stayed for the message's TTL, up to 18 hours), and an honest
// author heard from after the flood is still there.
func TestAddrsSybilsBounded(t *testing.T) {
	defer func(n int) { maxAddrAuthors = n }(maxAddrAuthors)
	maxAddrAuthors = 16
	victim := loopbackNode(t, false)
	at := newAddrsAttacker(t, victim)
	var sybils []peer.ID
	for k := range 3 * maxAddrAuthors {
		key, id := testutil.Key(t)
		at.publish(t, key, id, fakeAddrs(k, MaxAddrs))
		sybils = append(sybils, id)
	}
	key, honest := testutil.Key(t)
	want := fakeAddrs(1000, 2)
	at.publish(t, key, honest, want)
	// Messages are recorded in the order they were validated: once the
	// last one is in, so are the sybils'.
	awaitAddr(t, victim, honest, want[0])
	ps := victim.h.Peerstore()
	kept := 0
	for _, id := range sybils {
		if len(ps.Addrs(id)) > 0 {
			kept++
		}
	}
	if kept > maxAddrAuthors-1 {
		t.Errorf("peerstore holds addresses of %d sybil authors, want at most %d", kept, maxAddrAuthors-1)
	}
	if got := ps.Addrs(honest); len(got) != len(want) {
		t.Errorf("honest author's addresses = %v, want %v", got, want)
	}
}

// TestAddrsReplaced: an author's new ADDRS replaces its earlier addresses
// (they were added to, up to libp2p's 64 a peer), and the TTL kept is at
// most AddrsTTL whatever the message says.
func TestAddrsReplaced(t *testing.T) {
	victim := loopbackNode(t, false)
	at := newAddrsAttacker(t, victim)
	key, id := testutil.Key(t)
	for k := range 10 {
		at.publish(t, key, id, fakeAddrs(k, MaxAddrs))
	}
	last := fakeAddrs(9, MaxAddrs)
	awaitAddr(t, victim, id, last[0])
	got := victim.h.Peerstore().Addrs(id)
	if len(got) != len(last) {
		t.Fatalf("peerstore holds %d addresses of the author, want the last ADDRS's %d", len(got), len(last))
	}
	for _, a := range got {
		if !ma.Contains(last, a) {
			t.Errorf("peerstore holds %v, not in the last ADDRS", a)
		}
	}
	// The messages said 65535 s: expiring the addresses kept for AddrsTTL
	// must leave none.
	victim.h.Peerstore().UpdateAddrs(id, AddrsTTL, 0)
	if got := victim.h.Peerstore().Addrs(id); len(got) != 0 {
		t.Errorf("%d addresses kept for longer than AddrsTTL", len(got))
	}
}

// addrsNet is a network with given addresses, for dialable alone.
type addrsNet struct {
	network.Network
	listen, iface []ma.Multiaddr
}

func (n addrsNet) ListenAddresses() []ma.Multiaddr                   { return n.listen }
func (n addrsNet) InterfaceListenAddresses() ([]ma.Multiaddr, error) { return n.iface, nil }

// TestAddrsDialable: an ADDRS's addresses are kept only where this host
// would dial them in good faith: public addresses and DNS names; loopback
// ones by a host that listens on loopback alone; private ones by a host on
// the same /24 or /64; never unspecified, link-local or multicast ones. A
// forged ADDRS had every app fetching its author's content dial services
// of its own machine and LAN.
func TestAddrsDialable(t *testing.T) {
	addrs := func(ss ...string) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, s := range ss {
			out = append(out, ma.StringCast(s))
		}
		return out
	}
	loop := addrsNet{listen: addrs("/ip4/127.0.0.1/tcp/4001"), iface: addrs("/ip4/127.0.0.1/tcp/4001")}
	lan := addrsNet{listen: addrs("/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"),
		iface: addrs("/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.20/tcp/4001", "/ip6/fd00:1:2:3::20/tcp/4001")}
	for _, tc := range []struct {
		addr      string
		loop, lan bool
	}{
		{"/ip4/203.0.113.7/tcp/4001", true, true},
		{"/dns4/seed.example.com/tcp/4001", true, true},
		{"/ip6/2001:db8::7/udp/4001/quic-v1", true, true},
		{"/ip4/127.0.0.1/tcp/6379", true, false},
		{"/ip6/::1/tcp/22", true, false},
		{"/ip4/192.168.1.1/tcp/80", false, true},
		{"/ip4/192.168.2.1/tcp/80", false, false},
		{"/ip4/10.0.0.1/tcp/80", false, false},
		{"/ip4/100.64.0.1/tcp/80", false, false},
		{"/ip6/fd00:1:2:3::1/tcp/80", false, true},
		{"/ip4/169.254.169.254/tcp/80", false, false},
		{"/ip4/0.0.0.0/tcp/80", false, false},
		{"/ip4/224.0.0.1/udp/5353", false, false},
		{"/ip6/fe80::1/tcp/80", false, false},
	} {
		a := ma.StringCast(tc.addr)
		if got := dialable(a, loop); got != tc.loop {
			t.Errorf("dialable(%s) on a loopback host = %v, want %v", tc.addr, got, tc.loop)
		}
		if got := dialable(a, lan); got != tc.lan {
			t.Errorf("dialable(%s) on a LAN host = %v, want %v", tc.addr, got, tc.lan)
		}
	}
}

// TestAddrsRecordsDialableOnly: the address book of a host on loopback
// keeps an ADDRS's public and loopback addresses and drops its LAN and
// link-local ones (it put all of them in the peerstore, to be dialled).
func TestAddrsRecordsDialableOnly(t *testing.T) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	b := newAddrBook(h.Network())
	p := testPeer(t)
	b.record(p, []ma.Multiaddr{
		ma.StringCast("/ip4/203.0.113.7/tcp/4001"),
		ma.StringCast("/ip4/127.0.0.1/tcp/4001"),
		ma.StringCast("/ip4/192.168.1.1/tcp/80"),
		ma.StringCast("/ip4/169.254.169.254/tcp/80"),
	}, time.Minute)
	var got []string
	for _, a := range h.Peerstore().Addrs(p) {
		got = append(got, a.String())
	}
	slices.Sort(got)
	if want := []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/203.0.113.7/tcp/4001"}; !slices.Equal(got, want) {
		t.Errorf("peerstore has %v, want %v", got, want)
	}
}
