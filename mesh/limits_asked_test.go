package mesh_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/meshcdn/meshcdn/mesh"
)

// peerLimits is what n's resource manager admits of p now: inbound
// streams and memory.
func peerLimits(t *testing.T, n *mesh.Node, p peer.ID) (streams int, memory int64) {
	t.Helper()
	_ = n.Host().Network().ResourceManager().ViewPeer(p, func(s network.PeerScope) error {
		l, ok := s.(rcmgr.ResourceScopeLimiter)
		if !ok {
			t.Fatalf("peer scope %T has no limits to see", s)
		}
		streams, memory = l.Limit().GetStreamLimit(network.DirInbound), l.Limit().GetMemoryLimit()
		return nil
	})
	return streams, memory
}

// TestFetchMakesSeedASender: an app that fetches from its seed over TCP
// admits the seed's streams as a sender's (80 inbound, 80 MiB of yamux
// windows and messages: a full-speed sender's) from before its first
// want-block, while the seed, which asked the app for nothing, admits the
// app's as any peer's (24, 8 MiB). Before the fetch the app too admits
// the seed's as any peer's. The wiring: mesh.New's fetcher tells the
// resource manager of each want-block (fetch.Config.Asking).
func TestFetchMakesSeedASender(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newSite(t, map[string]int64{"a.bin": 3<<20 + 1})
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, Origin: s.URL(), DisableDHT: true})
	m := s.Manifest()
	if err := seed.Pin(ctx, m); err != nil {
		t.Fatal(err)
	}
	var tcp []string
	for _, a := range seed.Addrs() {
		if x := a.String(); strings.Contains(x, "/tcp/") && !strings.Contains(x, "/ws") {
			tcp = append(tcp, x)
		}
	}
	app := newNode(t, mesh.Config{Bootstrap: tcp, DisableDHT: true, PeerTimeout: 5 * time.Second})
	if err := app.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if n, mem := peerLimits(t, app, seed.ID()); n != mesh.UnaskedStreamsInbound || mem != mesh.UnaskedPeerMemory {
		t.Errorf("before a fetch the app admits %d streams, %d bytes of the seed; want %d and %d", n, mem, mesh.UnaskedStreamsInbound, mesh.UnaskedPeerMemory)
	}
	r, _, err := app.OpenAsset(ctx, m, "a.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Peers[seed.ID()] == 0 {
		t.Fatalf("the seed sent nothing (%+v): nothing to admit it for", st)
	}
	if n, mem := peerLimits(t, app, seed.ID()); n != mesh.SenderStreamsInbound || mem != mesh.SenderPeerMemory {
		t.Errorf("after a fetch from it the app admits %d streams, %d bytes of the seed; want a sender's %d and %d", n, mem, mesh.SenderStreamsInbound, mesh.SenderPeerMemory)
	}
	if n, mem := peerLimits(t, seed, app.ID()); n != mesh.UnaskedStreamsInbound || mem != mesh.UnaskedPeerMemory {
		t.Errorf("the seed admits %d streams, %d bytes of the app it asked nothing; want %d and %d", n, mem, mesh.UnaskedStreamsInbound, mesh.UnaskedPeerMemory)
	}
}
