package mesh_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// TestFollowUsesManifestSeeds: an app configured with no bootstrap peer
// follows a site whose manifest lists its seed (and an entry that does not
// parse); the app connects to the seed and keeps it as a bootstrap peer,
// and a version that lists no seed leaves the app with its own
// configuration again.
func TestFollowUsesManifestSeeds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed})
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: meshtest.Site{"a.js": testutil.Bytes(1, 2000)}})
	seedAddr := seed.Addrs()[0].String()
	// The manifest with seeds is served apart from the origin's own, which
	// has none: a second version only changes the seeds.
	var body atomic.Pointer[[]byte]
	setSeeds := func(seeds ...string) {
		m := *o.Manifest()
		m.Seeds = seeds
		data, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := manifest.Parse(data); err != nil {
			t.Fatal(err)
		}
		body.Store(&data)
	}
	setSeeds(seedAddr, "/dns4/seed.invalid/tcp/1/p2p/not-a-peer-id")
	ms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(*body.Load())
	}))
	defer ms.Close()

	app := newNode(t, mesh.Config{Origin: o.URL()})
	f, err := app.Follow(mesh.FollowConfig{URL: ms.URL + "/manifest.json"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	awaitConnectedness(ctx, t, app, seed.ID(), true)
	if got := app.Config().Bootstrap; !slices.Equal(got, []string{seedAddr}) {
		t.Errorf("Bootstrap after following = %q, want the manifest's one valid seed %q", got, seedAddr)
	}
	ch := f.Subscribe(ctx)
	setSeeds()
	f.Check()
	waitEvent(ctx, t, ch, mesh.SiteUpdated)
	if got := app.Config().Bootstrap; len(got) != 0 {
		t.Errorf("Bootstrap after a version without seeds = %q, want none", got)
	}
}
