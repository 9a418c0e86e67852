package mesh_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
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
	if _, err := o.SetSeeds(seedAddr, "/dns4/seed.invalid/tcp/1/p2p/not-a-peer-id"); err != nil {
		t.Fatal(err)
	}
	app := newNode(t, mesh.Config{Origin: o.URL()})
	f, err := app.Follow(mesh.FollowConfig{URL: "manifest.json"})
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
	if _, err := o.SetSeeds(); err != nil { // a version that only changes the seeds
		t.Fatal(err)
	}
	f.Check()
	waitEvent(ctx, t, ch, mesh.SiteUpdated)
	if got := app.Config().Bootstrap; len(got) != 0 {
		t.Errorf("Bootstrap after a version without seeds = %q, want none", got)
	}
}
