//go:build fault

package mesh_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// TestFaultStalledHandshakes: 200 TCP connections to a seed that begin a
// handshake and stall (multistream and noise named, then nothing), each
// redialled as the seed's 15 s accept timeout closes it, while a new app
// connects to the seed over TCP and over QUIC. Transient connections
// (still in their handshake) were capped at a quarter of the inbound
// limit, 125 for this seed (MaxConns 400): the stalled ones took every
// slot and the apps could not connect at all until the flood stopped (an
// audit: 320 of a default seed's, over TCP and QUIC). Now the transient cap
// is the system's own.
func TestFaultStalledHandshakes(t *testing.T) {
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, MaxConns: 400, DisableDHT: true})
	tcpAddr, quicAddr := seedAddrs(seed)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	held := make(chan struct{}, 200)
	for range 200 {
		wg.Go(func() { stallHandshakes(ctx, hostPortOf(tcpAddr), nil, held) })
	}
	for range 200 { // every stalled connection made once
		<-held
	}
	// Wait until the seed holds at least 120 of them in their handshake
	// (the old cap was 125).
	deadline := time.Now().Add(10 * time.Second)
	for transientIn(seed) < 120 {
		if time.Now().After(deadline) {
			t.Fatalf("the seed holds %d handshakes after 10 s, want 120", transientIn(seed))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, addr := range []string{tcpAddr, quicAddr} {
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		app, err := mesh.New(actx, meshtest.LocalConfig(mesh.Config{Bootstrap: []string{addr}, BrowserTransports: mesh.Off, DisableDHT: true}))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if err := app.WaitPeers(actx, 1); err != nil {
			t.Errorf("an app dialling %s beside 200 stalled handshakes: %v", addr[:strings.Index(addr, "/p2p/")], err)
		}
		app.Close()
		cancel()
	}
}

// transientIn is how many inbound connections n holds in its handshake.
func transientIn(n *mesh.Node) int {
	var st network.ScopeStat
	n.Host().Network().ResourceManager().ViewTransient(func(s network.ResourceScope) error { st = s.Stat(); return nil })
	return st.NumConnsInbound
}

// TestFaultStalledHandshakesFewAddresses: four addresses (127.0.0.2-5,
// loopback made to count like any other address) each open 30 TCP
// connections to a seed of 80 inbound connections (MaxConns 64) that name
// noise and stall, redialled as the seed closes them, while a new app
// connects. Without a limit on handshakes per address the 120 took every
// inbound slot and the app could not connect; now each address holds 16
// (a seed's limit) and the app connects beside them.
func TestFaultStalledHandshakesFewAddresses(t *testing.T) {
	defer mesh.LiftHandshakeExempt()()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, MaxConns: 64, DisableDHT: true})
	tcpAddr, _ := seedAddrs(seed)
	hostPort := hostPortOf(tcpAddr)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	const addrs, each = 4, 30
	for i := range addrs * each {
		from := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%addrs))}
		wg.Go(func() { stallHandshakes(ctx, hostPort, from, nil) })
	}
	// Wait until the flood holds all it can: 64 with the limit, 80 (every
	// inbound slot) without.
	deadline := time.Now().Add(10 * time.Second)
	for transientIn(seed) < addrs*16 {
		if time.Now().After(deadline) {
			t.Fatalf("the seed holds %d handshakes after 10 s, want %d", transientIn(seed), addrs*16)
		}
		time.Sleep(10 * time.Millisecond)
	}
	actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	app, err := mesh.New(actx, meshtest.LocalConfig(mesh.Config{Bootstrap: []string{tcpAddr}, BrowserTransports: mesh.Off, DisableDHT: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if err := app.WaitPeers(actx, 1); err != nil {
		t.Errorf("an app beside %d stalled handshakes from %d addresses (the seed holding %d): %v", addrs*each, addrs, transientIn(seed), err)
	}
}

// stallHandshakes opens TCP connections to hostPort from the address from
// (nil: any), names multistream and noise on each and then sends nothing,
// each one after the last was closed, until ctx ends; each connection
// made is told on opened, if it has room.
func stallHandshakes(ctx context.Context, hostPort string, from *net.TCPAddr, opened chan<- struct{}) {
	d := net.Dialer{}
	if from != nil {
		d.LocalAddr = from
	}
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", hostPort)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		c.Write([]byte("\x13/multistream/1.0.0\n\x07/noise\n"))
		select {
		case opened <- struct{}{}:
		default:
		}
		done := context.AfterFunc(ctx, func() { c.Close() })
		io.Copy(io.Discard, c) // until the seed closes it
		done()
		c.Close()
	}
}

// seedAddrs returns n's TCP (not WebSocket) and QUIC multiaddrs.
func seedAddrs(n *mesh.Node) (tcpAddr, quicAddr string) {
	for _, a := range n.Addrs() {
		switch s := a.String(); {
		case strings.Contains(s, "/tcp/") && !strings.Contains(s, "/ws"):
			tcpAddr = s
		case strings.Contains(s, "/quic-v1/p2p/"):
			quicAddr = s
		}
	}
	return tcpAddr, quicAddr
}

// hostPortOf is the host:port of a /ip4/H/tcp/P/... multiaddr.
func hostPortOf(addr string) string {
	parts := strings.Split(addr, "/")
	return net.JoinHostPort(parts[2], parts[4])
}
