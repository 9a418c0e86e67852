package mesh

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
)

// TestBitswapStreamsAdmitFullSpeedSender pins that an app node's resource
// manager admits 64 inbound bitswap streams at once from a peer it asked
// for blocks: a seed sending 8 blocks at a time holds more than 8 streams
// open at the app (boxo closes each in the background after writing it),
// and a stream refused is a block dropped. With the limit at 16, a loaded
// app node refused them and fetches stalled for 3 s or failed (see
// BenchmarkNodeThroughput).
func TestBitswapStreamsAdmitFullSpeedSender(t *testing.T) {
	cfg := Config{}.withDefaults()
	asked := newAskedPeers()
	rm, err := rcmgr.NewResourceManager(newLimiter(cfg, asked))
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	p := peer.ID("seed")
	asked.ask(p)
	var open []network.StreamManagementScope
	defer func() {
		for _, s := range open {
			s.Done()
		}
	}()
	for i := range 64 {
		s, err := rm.OpenStream(p, network.DirInbound)
		if err != nil {
			t.Fatalf("stream %d: %v", i+1, err)
		}
		open = append(open, s)
		if err := s.SetProtocol(bitswapProtocols[0]); err != nil {
			t.Fatalf("stream %d of one peer refused for bitswap: %v", i+1, err)
		}
	}
}

// openIdentify opens a stream of proto for p in rm as go-libp2p's identify
// does (protocol, then service, then the memory to read an answer) and
// returns it, or the first refusal.
func openIdentify(rm network.ResourceManager, p peer.ID, dir network.Direction, proto protocol.ID) (network.StreamManagementScope, error) {
	s, err := rm.OpenStream(p, dir)
	if err != nil {
		return nil, err
	}
	if err := s.SetProtocol(proto); err != nil {
		s.Done()
		return nil, err
	}
	if err := s.SetService(identify.ServiceName); err != nil {
		s.Done()
		return nil, err
	}
	if err := s.ReserveMemory(signedIDSize, network.ReservationPriorityAlways); err != nil {
		s.Done()
		return nil, err
	}
	return s, nil
}

// TestIdentifyStreamsHeldByFew: for each role, MaxConns/8 - 1 peers each
// hold all the identify push streams they may (identifyPerPeer: the next
// is refused), and a new peer still identifies on each of 8 connections,
// request and push, both ways. With go-libp2p's limits (scaled to a seed's
// 1 GiB: 128 inbound in all, 16 per peer) 8 such peers filled identify and
// every new peer's identify was refused.
func TestIdentifyStreamsHeldByFew(t *testing.T) {
	for _, role := range []Role{RoleApp, RoleSeed} {
		cfg := Config{Role: role, Name: "x", InMemory: true}.withDefaults()
		rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(resourceLimits(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		var open []network.StreamManagementScope
		for i := range cfg.MaxConns/8 - 1 {
			p := peer.ID(fmt.Sprint("holder", i))
			for j := range identifyPerPeer + 1 {
				s, err := openIdentify(rm, p, network.DirInbound, identify.IDPush)
				switch {
				case j < identifyPerPeer && err != nil:
					t.Fatalf("%s: holder %d's push %d refused: %v", role, i, j+1, err)
				case j == identifyPerPeer && err == nil:
					t.Errorf("%s: holder %d's push %d admitted, want at most %d a peer", role, i, j+1, identifyPerPeer)
				}
				if err == nil {
					open = append(open, s)
				}
			}
		}
		honest := peer.ID("honest")
		for range 8 { // 8 connections, each identified and pushed to, both ways
			for _, dir := range []network.Direction{network.DirInbound, network.DirOutbound} {
				for _, proto := range []protocol.ID{identify.ID, identify.IDPush} {
					s, err := openIdentify(rm, honest, dir, proto)
					if err != nil {
						t.Fatalf("%s: beside %d holders, a new peer's %s (%s) refused: %v", role, cfg.MaxConns/8-1, proto, dir, err)
					}
					open = append(open, s)
				}
			}
		}
		for _, s := range open {
			s.Done()
		}
		rm.Close()
	}
}

// windows reserves yamux windows in p's scope in rm (as go-yamux does for
// each stream it opens, in its connection's) until one is refused or want
// are held, and returns how many it reserved.
func windows(rm network.ResourceManager, p peer.ID, want int) int {
	n := 0
	_ = rm.ViewPeer(p, func(s network.PeerScope) error {
		for n < want && s.ReserveMemory(yamuxWindow, network.ReservationPriorityAlways) == nil {
			n++
		}
		return nil
	})
	return n
}

// TestPeerLimitsFollowAsking: a peer this node has not asked for blocks
// holds unaskedStreamsInbound inbound streams and unaskedPeerMemory of
// yamux windows; once asked (askedPeers.ask, which fetch calls before a
// want-block goes out) it holds a sender's, on the scopes it already has,
// for askedFor after the last want-block. Before, every peer had 80
// streams and 192 MiB on a seed (its 80 idle streams' windows: 20 MiB),
// and 57 such peers filled a seed's memory.
func TestPeerLimitsFollowAsking(t *testing.T) {
	cfg := Config{Role: RoleSeed}.withDefaults()
	asked := newAskedPeers()
	rm, err := rcmgr.NewResourceManager(newLimiter(cfg, asked))
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	p := peer.ID("peer")
	if n := streamsAdmitted(rm, p, peerStreamsInbound); n != unaskedStreamsInbound {
		t.Errorf("a peer not asked holds %d inbound streams, want %d", n, unaskedStreamsInbound)
	}
	if n, want := windows(rm, p, 1024), unaskedPeerMemory/yamuxWindow; n != want {
		t.Errorf("a peer not asked reserves %d yamux windows, want %d", n, want)
	}
	asked.ask(p)
	if n, want := streamsAdmitted(rm, p, peerStreamsInbound), peerStreamsInbound-unaskedStreamsInbound; n != want {
		t.Errorf("a peer asked holds %d more inbound streams, want %d", n, want)
	}
	if n, want := windows(rm, p, 1024), (senderPeerMemory-unaskedPeerMemory)/yamuxWindow; n != want {
		t.Errorf("a peer asked reserves %d more yamux windows, want %d", n, want)
	}
	now := time.Now()
	if !asked.sender(p, now.Add(askedFor-time.Second)) || asked.sender(p, now.Add(askedFor+time.Second)) {
		t.Errorf("asked %v ago: a sender until askedFor (%v), not after", askedFor, askedFor)
	}
}

// streamsAdmitted opens up to want inbound streams of p in rm, kept open,
// and returns how many it admitted.
func streamsAdmitted(rm network.ResourceManager, p peer.ID, want int) int {
	for n := range want {
		if _, err := rm.OpenStream(p, network.DirInbound); err != nil {
			return n
		}
	}
	return want
}

// TestAskedPeersExpire: a peer asked for blocks is a sender for askedFor
// after the last ask, and no longer; a peer never asked is none. (The set
// forgets expired peers as it grows: internal/expiry's TestSetSweeps.)
func TestAskedPeersExpire(t *testing.T) {
	a := newAskedPeers()
	a.ask("p")
	now := time.Now()
	if !a.sender("p", now) || a.sender("q", now) {
		t.Errorf("just asked: sender(p) %v, sender(never asked) %v", a.sender("p", now), a.sender("q", now))
	}
	if a.sender("p", now.Add(askedFor+time.Second)) {
		t.Error("a peer asked longer than askedFor ago is still a sender")
	}
}
