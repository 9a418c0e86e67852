package mesh_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// exampleOrigin serves a one-page site and its manifest, as a CDN would.
func exampleOrigin() *meshtest.Origin {
	o, err := meshtest.NewOrigin(meshtest.OriginConfig{
		Site: meshtest.Site{"index.html": []byte("<!doctype html><h1>hello, mesh</h1>\n")},
	})
	if err != nil {
		panic(err)
	}
	return o
}

func Example() {
	origin := exampleOrigin()
	defer origin.Close()
	ctx := context.Background()

	n, err := mesh.New(ctx, mesh.Config{
		Name:        "acme-site",
		InMemory:    true, // a real app sets DataDir
		Origin:      origin.URL(),
		ListenAddrs: mesh.LoopbackAddrs(mesh.RoleApp),
		MDNS:        mesh.Off,
		NATPortMap:  mesh.Off,
	})
	if err != nil {
		panic(err)
	}
	defer n.Close()

	m, err := n.LoadManifest(ctx, "manifest.json")
	if err != nil {
		panic(err)
	}
	r, asset, err := n.OpenAsset(ctx, m, "index.html")
	if err != nil {
		panic(err)
	}
	defer r.Close()
	page, _ := io.ReadAll(r)
	st := r.Stats()
	fmt.Printf("%s (%s): %s", asset.Path, asset.Type, page)
	fmt.Println("from origin:", st.OriginBytes, "from peers:", st.PeerBytes)
	// Output:
	// index.html (text/html; charset=utf-8): <!doctype html><h1>hello, mesh</h1>
	// from origin: 36 from peers: 0
}

func ExampleNode_Gateway() {
	origin := exampleOrigin()
	defer origin.Close()
	ctx := context.Background()
	n, err := mesh.New(ctx, mesh.Config{Name: "acme-site", InMemory: true, Origin: origin.URL(),
		ListenAddrs: mesh.LoopbackAddrs(mesh.RoleApp), MDNS: mesh.Off, NATPortMap: mesh.Off})
	if err != nil {
		panic(err)
	}
	defer n.Close()
	m, _ := n.LoadManifest(ctx, "manifest.json")

	// Serve the site to a webview from 127.0.0.1.
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: m}))
	defer gw.Close()
	resp, err := http.Get(gw.URL + "/index.html")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("Etag"))
	// Output:
	// 200 OK text/html; charset=utf-8 "bafkreigz7wyesgpq5v5i4qx5atx24a7eeaavncroukrouwsihhyx665bka"
}
