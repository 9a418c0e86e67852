package meshtest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// A user checks that their app configuration takes a site from a seed
// rather than from their CDN: an origin at 25 MiB/s and 30 ms away, one
// seed, and four apps arriving over half a second.
func Example() {
	origin, err := meshtest.NewOrigin(meshtest.OriginConfig{
		Site:           meshtest.DemoSite(1, 4<<20), // or Dir: "./public"
		BytesPerSecond: 25 << 20,
		Latency:        30 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer origin.Close()

	crowd, err := meshtest.NewCrowd(meshtest.CrowdConfig{
		Origin: origin,
		Seeds:  1,
		Apps:   4,
		// The configuration under test.
		App:     mesh.Config{PeerTimeout: 5 * time.Second, Quota: 64 << 20},
		Arrival: meshtest.Staggered(500 * time.Millisecond),
		// Each app waits until it has heard who holds the site (at
		// most 10 s: generous, for a loaded test machine).
		WaitProvider: 10 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer crowd.Close()
	r, err := crowd.Run(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d apps fetched %d assets each\n", r.Apps, r.Assets)
	fmt.Println("apps' offload at least 0.9:", r.AppOffload >= 0.9)
	fmt.Println("origin copies while the apps ran below 0.5:", r.AppCopies < 0.5)
	// Output:
	// 4 apps fetched 9 assets each
	// apps' offload at least 0.9: true
	// origin copies while the apps ran below 0.5: true
}
