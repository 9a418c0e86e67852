package mesh_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
)

// An app bootstrapped to a seed of its site waits until it knows what the
// seed holds, so that its first fetch races the seed instead of going to
// the origin at once. The seed's
// address would come from the site (or the app's settings); the seed keeps
// it across restarts when it listens on fixed ports.
func ExampleNode_Ready() {
	origin := exampleOrigin()
	defer origin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	local := func(role mesh.Role, bootstrap ...string) *mesh.Node {
		n, err := mesh.New(ctx, mesh.Config{Name: "acme-site", Role: role, InMemory: true, Origin: origin.URL(),
			Bootstrap: bootstrap, ListenAddrs: mesh.LoopbackAddrs(role), MDNS: mesh.Off, NATPortMap: mesh.Off, DisableDHT: true})
		if err != nil {
			panic(err)
		}
		return n
	}
	seed := local(mesh.RoleSeed)
	defer seed.Close()
	m, err := seed.LoadManifest(ctx, "manifest.json")
	if err != nil {
		panic(err)
	}
	if err := seed.Pin(ctx, m); err != nil {
		panic(err)
	}

	app := local(mesh.RoleApp, seed.Addrs()[0].String())
	defer app.Close()
	if err := app.Ready(ctx); err != nil {
		panic(err) // mesh.ErrNoBootstrapPeer: no seed answered; fetches go to the origin
	}
	a, _ := m.Lookup("index.html")
	providers := app.Announcer().Table().Providers(a.Cid, 0)
	fmt.Println("seeds connected:", app.Stats().Seeds, "- the seed holds index.html:", len(providers) == 1 && providers[0] == seed.ID())
	r, _, err := app.OpenAsset(ctx, m, "index.html")
	if err != nil {
		panic(err)
	}
	defer r.Close()
	page, _ := io.ReadAll(r)
	fmt.Printf("%s", page)
	// Output:
	// seeds connected: 1 - the seed holds index.html: true
	// <!doctype html><h1>hello, mesh</h1>
}
