package meshtest

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestArrivalsNeighboursArrivedBefore: an arriving app's neighbours are
// chosen among the apps that arrived before it, whether or not they have
// started; only those started are handed over as addresses to bootstrap
// to (readyAddrs), the rest are dialled once they start. When they were
// chosen among the apps started only, a crowd arriving faster than an app
// starts made a star: the few apps started first were every later app's
// neighbours (in the demo's 50-app crowd, four apps had 26-32 links and
// 26 apps had three, all to them).
func TestArrivalsNeighboursArrivedBefore(t *testing.T) {
	a := &arrivals{rng: rand.New(rand.NewPCG(1, 1))}
	var all []*arrival
	for range 6 {
		me, before := a.arrive(3)
		if want := min(len(all), 3); len(before) != want {
			t.Fatalf("app %d arrived after %d: %d neighbours, want %d", len(all), len(all), len(before), want)
		}
		for _, x := range before {
			if !slices.Contains(all, x) {
				t.Fatalf("app %d: a neighbour that had not arrived", len(all))
			}
		}
		all = append(all, me)
	}
	if got := a.pick(3, nil); len(got) != 0 {
		t.Fatalf("pick before any app started = %v, want none", got)
	}
	all[1].started("/ip4/127.0.0.1/tcp/1")
	all[2].started("")
	if got := readyAddrs(all[:4]); !slices.Equal(got, []string{"/ip4/127.0.0.1/tcp/1"}) {
		t.Fatalf("readyAddrs = %v, want the one app started with an address", got)
	}
	if got := a.pick(3, nil); !slices.Equal(got, []string{"/ip4/127.0.0.1/tcp/1"}) {
		t.Fatalf("pick = %v, want the one app started with an address", got)
	}
	if got := a.pick(3, []string{"/ip4/127.0.0.1/tcp/1"}); len(got) != 0 {
		t.Fatalf("pick leaving it out = %v, want none", got)
	}
}
