//go:build kubo

package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/store"
)

// kuboDaemon starts `ipfs daemon` on a fresh test repo (loopback only, no
// bootstrap peers, no mDNS) and returns the environment for ipfs commands
// and the daemon's swarm address with its peer ID.
func kuboDaemon(t *testing.T) (bin string, env []string, addr string, id peer.ID) {
	t.Helper()
	bin, env = kubo(t)
	cmd := exec.Command(bin, "daemon", "--enable-gc=false")
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Daemon is ready") {
				close(ready)
				io.Copy(io.Discard, out)
				return
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatal("Kubo daemon did not become ready in 60 s")
	}
	var info struct {
		ID        string
		Addresses []string
	}
	if err := json.Unmarshal([]byte(run(t, env, nil, bin, "id")), &info); err != nil {
		t.Fatal(err)
	}
	for _, a := range info.Addresses {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			addr = a
		}
	}
	if addr == "" {
		t.Fatalf("Kubo has no loopback TCP address: %v", info.Addresses)
	}
	id, err = peer.Decode(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	return bin, env, addr, id
}

func newMeshNode(t *testing.T) *mesh.Node {
	t.Helper()
	n, err := mesh.New(context.Background(), mesh.Config{
		Name: "kubo-interop", Role: mesh.RoleSeed, InMemory: true,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, MDNS: mesh.Off, NATPortMap: mesh.Off,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestKuboFetchesFromMeshcdn: a Kubo node gets content by CID over bitswap
// from a meshcdn node, which counts the bytes it served.
func TestKuboFetchesFromMeshcdn(t *testing.T) {
	bin, env, _, _ := kuboDaemon(t)
	n := newMeshNode(t)
	const size = 5<<20 + 123
	want := testutil.Bytes(21, size)
	c, err := n.Store().Import(context.Background(), bytes.NewReader(want), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	run(t, env, nil, bin, "swarm", "connect", n.Addrs()[0].String())
	start := time.Now()
	got := rawOutput(t, env, bin, "cat", "--timeout=60s", c.Root.String())
	if !bytes.Equal(got, want) {
		t.Fatalf("ipfs cat gave %d bytes that differ from the %d imported", len(got), len(want))
	}
	served := n.Stats().Fetch.ServedBytes
	if served < size {
		t.Errorf("meshcdn served %d bytes over bitswap, want at least %d", served, size)
	}
	t.Logf("Kubo fetched %d bytes from meshcdn in %v; meshcdn counted %d bytes served", size, time.Since(start).Round(time.Millisecond), served)
}

// TestMeshcdnFetchesFromKubo: content added to Kubo (same profile, so the
// same CID as meshcdn's import) is fetched by a meshcdn node over bitswap,
// every byte from Kubo.
func TestMeshcdnFetchesFromKubo(t *testing.T) {
	bin, env, addr, kid := kuboDaemon(t)
	const size = 7<<20 + 9
	want := testutil.Bytes(22, size)
	file := filepath.Join(t.TempDir(), "asset.bin")
	if err := os.WriteFile(file, want, 0o644); err != nil {
		t.Fatal(err)
	}
	kc := run(t, env, nil, bin, "add", "-Q", "--pin=true", file)
	mc, err := store.New(store.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	imp, err := mc.Import(context.Background(), bytes.NewReader(want), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if kc != imp.Root.String() {
		t.Fatalf("ipfs add gives %s, meshcdn's import %s", kc, imp.Root)
	}

	n := newMeshNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n.Connect(ctx, addr+"/p2p/"+kid.String()); err != nil {
		t.Fatal(err)
	}
	c, _ := cid.Decode(kc)
	start := time.Now()
	r, err := n.Open(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	st := r.Stats()
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes that differ from the %d Kubo holds", len(got), len(want))
	}
	if st.PeerBytes != size || st.OriginBytes != 0 || st.Peers[kid] != size {
		t.Errorf("fetch stats: %d from peers (%d from Kubo), %d from origin; want all %d from Kubo", st.PeerBytes, st.Peers[kid], st.OriginBytes, size)
	}
	t.Logf("meshcdn fetched %d bytes from Kubo in %v", size, time.Since(start).Round(time.Millisecond))
}

func rawOutput(t *testing.T, env []string, bin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return out
}
