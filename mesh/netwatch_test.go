package mesh_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
)

// blackhole relays TCP connections to target until cut: from then on every
// connection it relays is silent both ways (what is sent is read and
// dropped), as connections from an address the machine no longer has are
// after a network change; connections made after the cut are relayed.
type blackhole struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*holePair
	wg     sync.WaitGroup
}

type holePair struct {
	a, b net.Conn
	dead atomic.Bool
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bh := &blackhole{ln: ln, target: target}
	bh.wg.Add(1)
	go bh.accept()
	t.Cleanup(bh.close)
	return bh
}

func (bh *blackhole) accept() {
	defer bh.wg.Done()
	for {
		a, err := bh.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", bh.target)
		if err != nil {
			a.Close()
			continue
		}
		p := &holePair{a: a, b: b}
		bh.mu.Lock()
		bh.conns = append(bh.conns, p)
		bh.mu.Unlock()
		bh.wg.Add(2)
		go bh.pipe(p, a, b)
		go bh.pipe(p, b, a)
	}
}

// pipe copies src to dst while p is not cut, and reads src into nothing
// after.
func (bh *blackhole) pipe(p *holePair, dst, src net.Conn) {
	defer bh.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.dead.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut makes every connection relayed so far silent.
func (bh *blackhole) cut() {
	bh.mu.Lock()
	defer bh.mu.Unlock()
	for _, p := range bh.conns {
		p.dead.Store(true)
	}
}

func (bh *blackhole) close() {
	bh.ln.Close()
	bh.mu.Lock()
	for _, p := range bh.conns {
		p.a.Close()
		p.b.Close()
	}
	bh.mu.Unlock()
	bh.wg.Wait()
}

// TestNetworkChangeDropsIdleOriginConnections: after a network change, the
// HTTP client's idle connections to the origin are dead (bound to an
// address the machine no longer has). The node drops them when it sees the
// change, and the next fetch from the origin takes a new connection at
// once; before, it went out on a dead one, waited OriginHeaderTimeout
// (10 s) and failed, with the origin reachable all along (the audit's
// namespace lab: the gateway's 504 for the first asset after a move).
func TestNetworkChangeDropsIdleOriginConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	site := newSite(t, map[string]int64{"a.bin": 3 << 20, "b.bin": 3 << 20})
	bh := newBlackhole(t, strings.TrimPrefix(site.URL(), "http://"))
	n := newNode(t, mesh.Config{Origin: "http://" + bh.ln.Addr().String()})
	m := site.Manifest()
	if err := readAsset(ctx, n, m, "a.bin", site.Site()["a.bin"]); err != nil {
		t.Fatal(err) // the client now holds idle connections through bh
	}
	bh.cut()
	n.NetworkChanged(netip.MustParseAddr("127.0.0.1"))
	start := time.Now()
	within, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	if err := readAsset(within, n, m, "b.bin", site.Site()["b.bin"]); err != nil {
		t.Fatalf("fetch after the network changed: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("fetch after the network changed: %v", time.Since(start).Round(time.Millisecond))
}

// readAsset reads path whole through n and compares it with want.
func readAsset(ctx context.Context, n *mesh.Node, m *manifest.Manifest, path string, want []byte) error {
	r, _, err := n.OpenAsset(ctx, m, path)
	if err != nil {
		return err
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: wrong bytes", path)
	}
	return nil
}

// TestNetworkChangeClosesConnectionsFromGoneAddresses: a connection from an
// address the machine no longer has is closed when the node sees the
// network change, and the seed it led to is redialled at once; before, it
// stayed "connected" until yamux's keepalive gave up (15 to 40 s in the
// audit's lab), every fetch meanwhile going to the origin.
func TestNetworkChangeClosesConnectionsFromGoneAddresses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	app := newNode(t, mesh.Config{Bootstrap: []string{seed.Addrs()[0].String()},
		BootstrapBackoff: mesh.Backoff{Min: time.Minute, Max: time.Minute}}) // only a kick redials soon
	if err := app.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	old := app.Host().Network().ConnsToPeer(seed.ID())
	sub, err := app.Host().EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	start := time.Now()
	app.NetworkChanged(netip.MustParseAddr("192.0.2.1")) // 127.0.0.1 is gone
	for _, c := range old {
		if !c.IsClosed() {
			t.Errorf("connection from %s, an address gone, is still open", c.LocalMultiaddr())
		}
	}
	within, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	awaitConnectedness(within, t, app, seed.ID(), true)
	t.Logf("seed redialled %v after the change", time.Since(start).Round(time.Millisecond))
}

// TestStaleConnectionClosedWhenPeerConnectsAgain: an app changes network
// and redials its seed from its new address; the seed still holds the
// app's old connection, which nothing reaches any more, and go-libp2p
// opens the seed's streams to the app on it (it has the most streams). The
// seed pings the app on the old connection when the new one comes, closes
// it when no answer comes within 5 s, and the app fetches from the seed
// again; before, the old connection stayed until yamux's keepalive gave up
// (30 to 40 s), the seed's blocks went into it and the app's fetches to the
// origin.
func TestStaleConnectionClosedWhenPeerConnectsAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	site := newSite(t, map[string]int64{"a.bin": 4 << 20})
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, Origin: site.URL(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	m := site.Manifest()
	if err := seed.Pin(ctx, m); err != nil {
		t.Fatal(err)
	}
	tcp := strings.Split(seed.Addrs()[0].String(), "/") // /ip4/127.0.0.1/tcp/PORT/p2p/ID
	bh := newBlackhole(t, "127.0.0.1:"+tcp[4])
	_, port, _ := net.SplitHostPort(bh.ln.Addr().String())
	app := newNode(t, mesh.Config{Bootstrap: []string{"/ip4/127.0.0.1/tcp/" + port + "/p2p/" + seed.ID().String()}})
	if err := app.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	old := seed.Host().Network().ConnsToPeer(app.ID())
	gone := make(chan struct{}, 1)
	seed.Host().Network().Notify(&network.NotifyBundle{DisconnectedF: func(network.Network, network.Conn) {
		select {
		case gone <- struct{}{}:
		default:
		}
	}})

	bh.cut()                                             // the app's old network is gone...
	app.NetworkChanged(netip.MustParseAddr("192.0.2.1")) // ...and the app redials from its new one
	moved := time.Now()
	within, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	for !allClosed(old) {
		select {
		case <-gone:
		case <-within.Done():
			t.Fatalf("the seed still holds the app's old connection %v after the app connected again", time.Since(moved).Round(time.Millisecond))
		}
	}
	t.Logf("the seed closed the app's old connection %v after the move", time.Since(moved).Round(time.Millisecond))
	a, _ := m.Lookup("a.bin")
	waitProvider(ctx, t, app, a.Cid)
	r, _, err := app.OpenAsset(within, m, "a.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, site.Site()["a.bin"]) {
		t.Fatalf("fetch from the seed after the move: %d bytes, %v", len(got), err)
	}
	if st := r.Stats(); st.PeerBytes != int64(len(got)) {
		t.Errorf("fetch after the move: %d bytes from peers, want all %d", st.PeerBytes, len(got))
	}
}

// allClosed reports whether every connection in cs is closed.
func allClosed(cs []network.Conn) bool {
	for _, c := range cs {
		if !c.IsClosed() {
			return false
		}
	}
	return true
}
