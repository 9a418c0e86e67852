package meshtest

import (
	"math/rand/v2"
	"slices"
	"time"
)

// Arrival is a schedule: the times, from the crowd's start, at which n app
// nodes arrive, in ascending order. Make one with AtOnce, Staggered or
// Poisson, or write your own.
type Arrival func(n int) []time.Duration

// AtOnce makes every node arrive at the start.
func AtOnce() Arrival {
	return func(n int) []time.Duration { return make([]time.Duration, n) }
}

// Staggered spreads the arrivals evenly over d: the first at the start, the
// last at d.
func Staggered(d time.Duration) Arrival {
	return func(n int) []time.Duration {
		ts := make([]time.Duration, n)
		for i := range ts {
			if n > 1 {
				ts[i] = d * time.Duration(i) / time.Duration(n-1)
			}
		}
		return ts
	}
}

// Poisson makes the nodes arrive as a Poisson process over d, given that n
// arrive in all: n times drawn uniformly over [0, d) and sorted. The same
// seed gives the same schedule.
func Poisson(d time.Duration, seed uint64) Arrival {
	return func(n int) []time.Duration {
		rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		ts := make([]time.Duration, n)
		for i := range ts {
			ts[i] = time.Duration(rng.Int64N(int64(d) + 1))
		}
		slices.Sort(ts)
		return ts
	}
}
