package mesh_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
)

// deploy writes a site version into dir and its manifest beside it, as
// `go run ./examples/manifest DIR` does.
func deploy(dir, page string) {
	os.WriteFile(filepath.Join(dir, "index.html"), []byte(page), 0o644)
	m, _ := manifest.FromDir(context.Background(), dir, "manifest.json")
	data, _ := m.Marshal()
	os.WriteFile(filepath.Join(dir, "manifest.json"), data, 0o644)
}

func ExampleNode_Follow() {
	dir, _ := os.MkdirTemp("", "meshcdn-example-")
	defer os.RemoveAll(dir)
	deploy(dir, "<h1>version one</h1>\n")
	origin := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer origin.Close()
	ctx := context.Background()
	n, err := mesh.New(ctx, mesh.Config{Name: "acme-site", InMemory: true, Origin: origin.URL,
		ListenAddrs: mesh.LoopbackAddrs(mesh.RoleApp), MDNS: mesh.Off, NATPortMap: mesh.Off})
	if err != nil {
		panic(err)
	}
	defer n.Close()

	// Follow the site (checked every minute for an app) and serve it.
	f, err := n.Follow(mesh.FollowConfig{URL: "manifest.json"})
	if err != nil {
		panic(err)
	}
	defer f.Close()
	if _, err := f.Wait(ctx); err != nil {
		panic(err)
	}
	events := f.Subscribe(ctx)
	g := n.Gateway(mesh.GatewayConfig{})
	f.Attach(g)
	gw := httptest.NewServer(g)
	defer gw.Close()
	get := func() string {
		resp, err := http.Get(gw.URL + "/index.html")
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	fmt.Print(get())

	// The site is redeployed; Check asks now instead of in a minute.
	deploy(dir, "<h1>version two</h1>\n")
	f.Check()
	ev := <-events
	fmt.Println(ev.Kind, len(ev.Manifest.Assets), "asset")
	fmt.Print(get())
	// Output:
	// <h1>version one</h1>
	// updated 1 asset
	// <h1>version two</h1>
}
