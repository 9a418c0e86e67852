package mesh_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/mesh"
)

// loopbackHost is a plain libp2p host on loopback TCP.
func loopbackHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// sendWantList writes a bitswap want list of n entries from h to p on a new
// stream and reads until the stream ends; it returns the stream's error.
func sendWantList(ctx context.Context, h host.Host, p peer.ID, n int) error {
	s, err := h.NewStream(ctx, p, "/ipfs/bitswap/1.2.0")
	if err != nil {
		return err
	}
	defer s.Reset()
	m := bsmsg.New(true)
	for i := range n {
		d, _ := mh.Sum([]byte(fmt.Sprint(i)), mh.SHA2_256, -1)
		m.AddEntry(cid.NewCidV1(cid.Raw, d), int32(i), bspb.Message_Wantlist_Block, true)
	}
	var wire bytes.Buffer
	if err := m.ToNetV1(&wire); err != nil {
		return err
	}
	if _, err := s.Write(wire.Bytes()); err != nil {
		return err
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, s)
	return err
}

// TestRefusedPeerCannotReconnect: a node refuses a peer that sent a want
// list over the limits and closes its connections; the peer then redials
// at once (loopback is exempt from go-libp2p's connection rate limit), and
// the node, whose host gates connections with the fetcher's refusals, takes
// none of them while the peer is refused. Another peer connects as before.
func TestRefusedPeerCannotReconnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed})
	bad, good := loopbackHost(t), loopbackHost(t)
	info := peer.AddrInfo{ID: seed.ID(), Addrs: seed.Host().Addrs()}
	if err := bad.Connect(ctx, info); err != nil {
		t.Fatal(err)
	}
	_ = sendWantList(ctx, bad, seed.ID(), 5000)
	waitFor(ctx, t, "the seed to cut the peer off", func() bool {
		return seed.Host().Network().Connectedness(bad.ID()) != network.Connected
	})
	var conns atomic.Int64
	seed.Host().Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == bad.ID() {
			conns.Add(1)
		}
	}})
	for range 3 {
		// Refused after the security handshake, which on TCP may leave the
		// dialler's side believing it connected: a stream shows it is not.
		_ = bad.Connect(network.WithForceDirectDial(ctx, "redial"), info)
		_ = sendWantList(ctx, bad, seed.ID(), 10)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the seed took %d connections of the refused peer, want none", n)
	}
	if err := good.Connect(ctx, info); err != nil {
		t.Fatalf("another peer cannot connect: %v", err)
	}
}

// denyPeer is a connection gater that refuses one peer.
type denyPeer struct{ p peer.ID }

func (d denyPeer) InterceptPeerDial(p peer.ID) bool             { return p != d.p }
func (d denyPeer) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }
func (d denyPeer) InterceptAccept(network.ConnMultiaddrs) bool  { return true }
func (d denyPeer) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}
func (d denyPeer) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return p != d.p
}

// TestLibp2pGaterKept: a connection gater given in Config.Libp2pOptions is
// asked beside the node's own (libp2p takes only one gater option).
func TestLibp2pGaterKept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	denied, other := loopbackHost(t), loopbackHost(t)
	n := newNode(t, mesh.Config{Libp2pOptions: []libp2p.Option{libp2p.ConnectionGater(denyPeer{denied.ID()})}})
	info := peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()}
	if err := other.Connect(ctx, info); err != nil {
		t.Fatal(err)
	}
	if err := n.Host().Connect(ctx, peer.AddrInfo{ID: denied.ID(), Addrs: denied.Addrs()}); err == nil {
		t.Fatal("the node dialled the peer its Libp2pOptions gater denies")
	}
}
