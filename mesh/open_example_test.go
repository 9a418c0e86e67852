package mesh_test

import (
	"context"
	"fmt"
	"io"

	"github.com/meshcdn/meshcdn/mesh"
)

// A seed pins a site; an app connected to it fetches an asset by CID alone
// (no origin: Node.Open), so every byte comes from the seed, verified.
func ExampleNode_Open() {
	origin := exampleOrigin()
	defer origin.Close()
	ctx := context.Background()
	local := func(role mesh.Role, originURL string) *mesh.Node {
		n, err := mesh.New(ctx, mesh.Config{Name: "acme-site", Role: role, InMemory: true, Origin: originURL,
			ListenAddrs: mesh.LoopbackAddrs(role), MDNS: mesh.Off, NATPortMap: mesh.Off, DisableDHT: true})
		if err != nil {
			panic(err)
		}
		return n
	}
	seed := local(mesh.RoleSeed, origin.URL())
	defer seed.Close()
	m, err := seed.LoadManifest(ctx, "manifest.json")
	if err != nil {
		panic(err)
	}
	if err := seed.Pin(ctx, m); err != nil {
		panic(err)
	}

	app := local(mesh.RoleApp, "")
	defer app.Close()
	if err := app.Connect(ctx, seed.Addrs()[0].String()); err != nil {
		panic(err)
	}
	if err := app.WaitPeers(ctx, 1); err != nil {
		panic(err)
	}
	asset, _ := m.Lookup("index.html")
	r, err := app.Open(ctx, asset.Cid)
	if err != nil {
		panic(err)
	}
	defer r.Close()
	page, _ := io.ReadAll(r)
	st := r.Stats()
	fmt.Printf("%s", page)
	fmt.Println("from peers:", st.PeerBytes, "from origin:", st.OriginBytes)
	// Output:
	// <!doctype html><h1>hello, mesh</h1>
	// from peers: 36 from origin: 0
}
