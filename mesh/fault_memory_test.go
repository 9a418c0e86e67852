//go:build fault

package mesh_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/mesh"
)

// TestFaultIdleStreamsMemory: peers each hold as many inbound streams as
// a node admits them, idle, opening each again as the node ends it, while
// an honest app fetches 16 MiB from the seed over TCP: a new app from a
// seed under attack, or an app under attack from its seed. "tcp" and
// "quic": streams on every protocol the node speaks, bitswap first (with
// one empty message, so that the stream is not reset as silent: it then
// lives 2 min; the DHT's and the relay's live 1 min, the rest are opened
// again as they are reset), over yamux, whose streams each reserve a
// 256 KiB window of the node's memory, or over QUIC, whose do not;
// "unnegotiated": 24 bare yamux streams that never propose a protocol
// (all a peer may hold now; with more, their windows would close its
// connection).
//
// Every peer held 80 streams and all the memory go-libp2p scales (192 MiB
// on a seed). A seed's 1,152 MiB held 57 such peers' windows; at 96 peers
// over QUIC its 6,144 inbound streams were full and a new app fetched
// nothing ("no block from any source for 5 s"), as beside 26 peers that
// never negotiated (its 2,048 streams not negotiated); an app's 1,280
// inbound streams took 16 peers (its fetch from the seed failed), its 256
// not negotiated 4. Now a peer the node has not asked for blocks holds 24
// streams and 8 MiB of windows (one it asked is a sender: fetches are not
// slowed): beside 96 peers (3/4 of MaxConns/8, the fewest that fill any
// of a seed's limits now), or 24 and 12 at an app, the honest fetch takes
// at most 2x its baseline or 3 s more (the attackers' hosts share the two
// cores), every byte from the seed, and no attacker holds more than 8 MiB
// of the node's memory.
func TestFaultIdleStreamsMemory(t *testing.T) {
	for _, tc := range []struct {
		victim    mesh.Role
		peers     int
		transport string // tcp, quic, unnegotiated
	}{
		{mesh.RoleSeed, 96, "tcp"},
		{mesh.RoleSeed, 96, "quic"},
		{mesh.RoleSeed, 96, "unnegotiated"},
		{mesh.RoleApp, 24, "tcp"},
		{mesh.RoleApp, 12, "unnegotiated"},
	} {
		t.Run(string(tc.victim)+"/"+tc.transport, func(t *testing.T) { idleStreamsMemory(t, tc.victim, tc.peers, tc.transport) })
	}
}

// idleStreamsMemory replays TestFaultIdleStreamsMemory's attack by peers
// attackers on a seed (victim RoleSeed: a new app fetches from it) or on
// an app fetching from a seed (RoleApp).
func idleStreamsMemory(t *testing.T, victim mesh.Role, peers int, transport string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := newBed(t, 1, nil)
	base := b.baselineOf(ctx, t, "a0.bin", b.tcpApp)
	target := b.seed
	if victim == mesh.RoleApp {
		target = b.tcpApp(ctx, t)
	}
	attackCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	hs := make([]host.Host, peers)
	for i := range hs {
		hs[i] = streamHolder(attackCtx, t, target, transport, &wg)
	}
	held := awaitHeld(target, hs, 20*time.Second)
	t.Logf("%d peers hold %d inbound streams; %s", peers, held, memoryOf(target, hs))

	app := target
	if victim == mesh.RoleSeed {
		joinCtx, joinCancel := context.WithTimeout(ctx, 20*time.Second)
		defer joinCancel()
		app = b.tcpApp(joinCtx, t)
	}
	d, st, err := b.fetch(ctx, app, "a0.bin")
	if err != nil {
		t.Fatalf("honest fetch beside the attack: %v", err)
	}
	t.Logf("honest fetch: baseline %v, beside the attack %v (%.1fx); %s", base, d, float64(d)/float64(base), memoryOf(target, hs))
	if limit := max(2*base, base+3*time.Second); d > limit {
		t.Errorf("honest fetch beside the attack took %v, want at most %v (baseline %v)", d, limit, base)
	}
	b.checkHonest(t, app, st)
	for _, h := range hs {
		if m := peerStat(target, h).Memory; m > mesh.UnaskedPeerMemory {
			t.Errorf("an attacker holds %d MiB of the node's memory, want at most %d", m>>20, mesh.UnaskedPeerMemory>>20)
			break
		}
	}
}

// streamHolder is an attacker host that connects to n over transport
// (tcp, quic; unnegotiated: tcp) and holds all the streams n admits it
// until ctx ends (holdStreams, bitswap's first; idleStreams). Over yamux it
// has no other transport, so that when n closes its connection it dials
// it again over yamux.
func streamHolder(ctx context.Context, t *testing.T, n *mesh.Node, transport string, wg *sync.WaitGroup) host.Host {
	t.Helper()
	var h host.Host
	if transport == "quic" {
		h = attacker(t)
		connectVia(ctx, t, h, n, "/quic-v1")
	} else {
		h = attacker(t, libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport))
		connectTCP(ctx, t, h, n)
	}
	if transport == "unnegotiated" {
		var resets atomic.Int64
		idleStreams(ctx, h, n, mesh.UnaskedStreamsInbound, wg, &resets) // all it may hold: more are refused, and their windows close its connection
		return h
	}
	holdEvery(ctx, h, n, wg)
	return h
}

// holdEvery makes h hold all the streams n admits it on every protocol n
// speaks, bitswap's first (holdStreams).
func holdEvery(ctx context.Context, h host.Host, n *mesh.Node, wg *sync.WaitGroup) {
	protos := n.Host().Mux().Protocols()
	slices.SortStableFunc(protos, func(a, b protocol.ID) int { // bitswap's live longest
		return cmp.Compare(b2i(!isBitswap(a)), b2i(!isBitswap(b)))
	})
	holdStreams(ctx, h, n, protos, wg)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// connectVia connects h to n over n's addresses that contain part.
func connectVia(ctx context.Context, t *testing.T, h host.Host, n *mesh.Node, part string) {
	t.Helper()
	var addrs []ma.Multiaddr
	for _, a := range n.Host().Addrs() {
		if strings.Contains(a.String(), part) && !strings.Contains(a.String(), "/webtransport") {
			addrs = append(addrs, a)
		}
	}
	if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: addrs}); err != nil {
		t.Fatal(err)
	}
}

// peerStat is what n's resource manager holds for h's peer.
func peerStat(n *mesh.Node, h host.Host) network.ScopeStat {
	var st network.ScopeStat
	_ = n.Host().Network().ResourceManager().ViewPeer(h.ID(), func(s network.PeerScope) error {
		st = s.Stat()
		return nil
	})
	return st
}

// awaitHeld polls until the inbound streams n holds of hs stop growing for
// a second (the attackers have all they may), or within has passed, and
// returns them.
func awaitHeld(n *mesh.Node, hs []host.Host, within time.Duration) int {
	deadline := time.Now().Add(within)
	held, since := -1, time.Now()
	for time.Now().Before(deadline) && time.Since(since) < time.Second {
		sum := 0
		for _, h := range hs {
			sum += peerStat(n, h).NumStreamsInbound
		}
		if sum > held {
			held, since = sum, time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return held
}

// memoryOf describes n's memory: in all, and held by the peers of hs.
func memoryOf(n *mesh.Node, hs []host.Host) string {
	var sys network.ScopeStat
	_ = n.Host().Network().ResourceManager().ViewSystem(func(s network.ResourceScope) error {
		sys = s.Stat()
		return nil
	})
	var sum, most int64
	for _, h := range hs {
		m := peerStat(n, h).Memory
		sum, most = sum+m, max(most, m)
	}
	return fmt.Sprintf("node memory %d MiB (attackers %d MiB, at most %.1f MiB each), %d inbound streams, %d not negotiated",
		sys.Memory>>20, sum>>20, float64(most)/(1<<20), sys.NumStreamsInbound, transientStreamsIn(n))
}

// tcpApp starts an app bootstrapped to the seed's TCP address and waits
// until its table lists the seed for every asset.
func (b *nhBed) tcpApp(ctx context.Context, t *testing.T) *mesh.Node {
	t.Helper()
	var tcp []string
	for _, a := range b.seed.Addrs() {
		if s := a.String(); strings.Contains(s, "/tcp/") && !strings.Contains(s, "/ws") {
			tcp = append(tcp, s)
		}
	}
	return b.waitApp(ctx, t, newNode(t, mesh.Config{Bootstrap: tcp}))
}
