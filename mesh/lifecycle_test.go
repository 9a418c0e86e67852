package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"go.uber.org/goleak"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

func openFiles(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd here")
	}
	return len(ents)
}

// TestStartCloseTwentyNodes starts 20 nodes that connect to each other,
// closes them, and checks that goroutines and open files come back to where
// they were.
func TestStartCloseTwentyNodes(t *testing.T) {
	// Warm up what is started once per process (badger's and libp2p's
	// package-level workers), so the baseline includes it.
	warm, err := mesh.New(context.Background(), mesh.Config{Name: "leak", DataDir: t.TempDir(), ListenAddrs: mesh.LoopbackAddrs(mesh.RoleSeed), MDNS: mesh.Off, NATPortMap: mesh.Off})
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()
	settle()
	baseG, baseF := runtime.NumGoroutine(), openFiles(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var nodes []*mesh.Node
	for i := range 20 {
		role := mesh.RoleApp
		if i == 0 {
			role = mesh.RoleSeed
		}
		cfg := mesh.Config{Name: "leak", Role: role, DataDir: t.TempDir(), ListenAddrs: mesh.LoopbackAddrs(role), MDNS: mesh.Off, NATPortMap: mesh.Off}
		if i > 0 {
			cfg.Bootstrap = []string{nodes[0].Addrs()[0].String()}
		}
		n, err := mesh.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes[1:] {
		if err := n.WaitPeers(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if g := runtime.NumGoroutine(); g < baseG+20 {
		t.Fatalf("20 running nodes use only %d goroutines over the baseline: the test measures nothing", g-baseG)
	}
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		if err := n.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
		if err := n.WaitPeers(ctx, 1); err != mesh.ErrClosed {
			t.Errorf("WaitPeers after Close = %v, want ErrClosed", err)
		}
	}
	// go-libp2p-pubsub's goroutines end shortly after Close, not before it
	// returns; give them a bounded time.
	deadline := time.Now().Add(10 * time.Second)
	for {
		settle()
		g, f := runtime.NumGoroutine(), openFiles(t)
		if g <= baseG && f <= baseF {
			t.Logf("goroutines %d (baseline %d), open files %d (baseline %d)", g, baseG, f, baseF)
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("after closing 20 nodes: %d goroutines (baseline %d), %d open files (baseline %d)\n%s", g, baseG, f, baseF, buf[:n])
		}
		time.Sleep(100 * time.Millisecond) // nothing to await: goroutines ending elsewhere
	}
}

func settle() {
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
}

// hungNode returns a site of one file, a.bin of size bytes, whose origin
// never answers, a node on it (cfg with the site's Origin), and a channel
// closed when the origin is first asked.
func hungNode(t *testing.T, size int64, cfg mesh.Config) (*meshtest.Origin, *mesh.Node, <-chan struct{}) {
	t.Helper()
	s := newSite(t, map[string]int64{"a.bin": size})
	asked := make(chan struct{})
	var once sync.Once
	s.SetFault(func(r *http.Request) meshtest.Fault {
		once.Do(func() { close(asked) })
		return meshtest.Fault{Kind: meshtest.FaultHang}
	})
	cfg.Origin = s.URL()
	n, err := mesh.New(context.Background(), meshtest.LocalConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return s, n, asked
}

// TestPinRacingCloseFailsWithErrClosed: Close while Pin waits on the
// origin. Pin returns an error that matches ErrClosed, as every call the
// node's Close ends does, not only the fetcher's own fetch.ErrClosed.
func TestPinRacingCloseFailsWithErrClosed(t *testing.T) {
	s, n, asked := hungNode(t, 3<<20, mesh.Config{})
	done := make(chan error, 1)
	go func() { done <- n.Pin(context.Background(), s.Manifest()) }()
	<-asked
	if err := n.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := <-done; !errors.Is(err, mesh.ErrClosed) {
		t.Errorf("Pin racing Close = %v, want an error matching ErrClosed", err)
	}
}

// TestLoadManifestRacingClose: a LoadManifest waiting on an origin that
// never answers ends at Close with an error matching ErrClosed; with no
// ManifestTimeout it went on for as long as the origin held the request.
func TestLoadManifestRacingClose(t *testing.T) {
	_, n, asked := hungNode(t, 3000, mesh.Config{ManifestTimeout: -1})
	done := make(chan error, 1)
	go func() {
		_, err := n.LoadManifest(context.Background(), "manifest.json")
		done <- err
	}()
	<-asked
	if err := n.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := afterClose(t, done, "LoadManifest"); !errors.Is(err, mesh.ErrClosed) {
		t.Errorf("LoadManifest racing Close = %v, want an error matching ErrClosed", err)
	}
}

// TestPinAfterCloseEmptyManifest: Pin on a closed node fails with
// ErrClosed, a manifest of no assets too (it returned nil).
func TestPinAfterCloseEmptyManifest(t *testing.T) {
	n, err := mesh.New(context.Background(), meshtest.LocalConfig(mesh.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Pin(context.Background(), &manifest.Manifest{}); !errors.Is(err, mesh.ErrClosed) {
		t.Errorf("Pin of no assets after Close = %v, want ErrClosed", err)
	}
}

// TestConnectRacingClose: a Connect to a peer that accepts and never
// answers the handshake ends at Close with an error matching ErrClosed
// (it failed with "swarm closed", seconds later).
func TestConnectRacingClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c // held open, never answered
		}
	}()
	n, err := mesh.New(context.Background(), meshtest.LocalConfig(mesh.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	port := l.Addr().(*net.TCPAddr).Port
	addr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/12D3KooWLRPJAA5o6vKPUMSfoDtEsRHYEtQQGWUrbDJJuimXTGcJ", port)
	done := make(chan error, 1)
	go func() { done <- n.Connect(context.Background(), addr) }()
	c := <-accepted
	defer c.Close()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := afterClose(t, done, "Connect"); !errors.Is(err, mesh.ErrClosed) {
		t.Errorf("Connect racing Close = %v, want an error matching ErrClosed", err)
	}
}

// afterClose returns what a call racing Close sent on done, failing the
// test if it is still under way 10 s after Close.
func afterClose(t *testing.T, done <-chan error, call string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still under way 10 s after Close", call)
		return nil
	}
}

// TestReadRacingClose: a Read waiting on an origin that never answers
// ends at Close with an error matching ErrClosed (it matched only
// fetch.ErrClosed), and fetch.ErrClosed still.
func TestReadRacingClose(t *testing.T) {
	s, n, asked := hungNode(t, 3000, mesh.Config{})
	r, _, err := n.OpenAsset(context.Background(), s.Manifest(), "a.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(r)
		done <- err
	}()
	<-asked
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := afterClose(t, done, "Read"); !errors.Is(err, mesh.ErrClosed) || !errors.Is(err, fetch.ErrClosed) {
		t.Errorf("Read racing Close = %v, want an error matching ErrClosed and fetch.ErrClosed", err)
	}
}

// TestGatewayBaseURLWithQuery: a trustless gateway's base URL may carry a
// query (a signed URL's token), which the fetch keeps after /ipfs/CID; New
// refused it as "a base URL has no query". A fragment is still refused.
func TestGatewayBaseURLWithQuery(t *testing.T) {
	n, err := mesh.New(context.Background(), meshtest.LocalConfig(mesh.Config{Gateway: "https://gw.example/site?token=abc"}))
	if err != nil {
		t.Fatalf("New with a gateway URL with a query = %v", err)
	}
	n.Close()
	_, err = mesh.New(context.Background(), meshtest.LocalConfig(mesh.Config{Gateway: "https://gw.example/site#x"}))
	if !errors.Is(err, mesh.ErrConfig) {
		t.Errorf("New with a gateway URL with a fragment = %v, want ErrConfig", err)
	}
}

// TestNewThatCannotListenLeavesNothing: New fails when the host can listen
// on none of ListenAddrs (the one TCP port is taken), and releases
// everything it started: no goroutine of the host (swarm, transports,
// resource and connection managers) outlives the failed New, as they did
// when go-libp2p's New listened.
func TestNewThatCannotListenLeavesNothing(t *testing.T) {
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	before := goleak.IgnoreCurrent()
	cfg := meshtest.LocalConfig(mesh.Config{
		ListenAddrs:       []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)},
		BrowserTransports: mesh.Off,
	})
	n, err := mesh.New(context.Background(), cfg)
	if err == nil {
		n.Close()
		t.Fatal("New listening only on a taken port succeeded")
	}
	t.Logf("New = %v", err)
	goleak.VerifyNone(t, append(meshtest.LeakOptions(), before)...)
}

// TestLibp2pOptionsListenAddrs: the addresses the host listens on are
// those left once Config.Libp2pOptions apply: none after
// libp2p.NoListenAddrs (but the relay transport's /p2p-circuit), ours and the options' own after
// libp2p.ListenAddrStrings.
func TestLibp2pOptionsListenAddrs(t *testing.T) {
	n := newNode(t, mesh.Config{BrowserTransports: mesh.Off, Libp2pOptions: []libp2p.Option{libp2p.NoListenAddrs}})
	for _, a := range n.Host().Network().ListenAddresses() {
		if a.String() != "/p2p-circuit" { // the relay transport's, not an address of ours
			t.Errorf("after libp2p.NoListenAddrs the host listens on %v, want nothing but /p2p-circuit", a)
		}
	}
	m := newNode(t, mesh.Config{
		BrowserTransports: mesh.Off,
		ListenAddrs:       []string{"/ip4/127.0.0.1/tcp/0"},
		Libp2pOptions:     []libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1")},
	})
	var tcp, quic int
	for _, a := range m.Host().Network().ListenAddresses() {
		switch s := a.String(); {
		case strings.Contains(s, "/tcp/"):
			tcp++
		case strings.Contains(s, "/quic-v1"):
			quic++
		}
	}
	if tcp != 1 || quic != 1 {
		t.Errorf("listening on %v: want one TCP address (ListenAddrs) and one QUIC (Libp2pOptions)", m.Host().Network().ListenAddresses())
	}
}

// TestNewFailsOnAnAddressGiven: an address the caller gave in ListenAddrs
// that cannot be listened on (a taken port, a transport go-libp2p no
// longer has) fails New with a *ConfigError naming it; New started on the
// others, and a seed's multiaddrs in the manifest went dead without a word.
func TestNewFailsOnAnAddressGiven(t *testing.T) {
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, bad := range []string{
		fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", taken.Addr().(*net.TCPAddr).Port),
		"/ip4/127.0.0.1/udp/0/quic", // draft-29 QUIC: no transport
	} {
		cfg := meshtest.LocalConfig(mesh.Config{
			ListenAddrs:       []string{"/ip4/127.0.0.1/udp/0/quic-v1", bad},
			BrowserTransports: mesh.Off,
		})
		n, err := mesh.New(context.Background(), cfg)
		if err == nil {
			t.Errorf("New with %s in ListenAddrs succeeded, listening on %v", bad, n.Addrs())
			n.Close()
			continue
		}
		var ce *mesh.ConfigError
		if !errors.As(err, &ce) || ce.Field != "ListenAddrs[1]" {
			t.Errorf("New with %s in ListenAddrs = %v, want a *ConfigError naming ListenAddrs[1]", bad, err)
		}
	}
}
