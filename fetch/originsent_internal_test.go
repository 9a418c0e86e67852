package fetch

import (
	"testing"
	"time"
)

// TestInFlight: the estimate of bytes lost with a cut origin response is
// the bandwidth-delay product, bounded by what remained, and nothing for a
// body read to its end or not started.
func TestInFlight(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name         string
		read, length int64
		eof          bool
		elapsed, rtt time.Duration
		want         int64
	}{
		{"read to the end", 1 << 20, 1 << 20, false, 100 * ms, 10 * ms, 0},
		{"eof", 500, -1, true, 100 * ms, 10 * ms, 0},
		{"nothing read", 0, 1 << 20, false, 100 * ms, 10 * ms, 0},
		{"rate times rtt", 100_000, 1 << 20, false, 100 * ms, 10 * ms, 10_000},
		{"at most what remained", 1000_000, 1_001_000, false, 100 * ms, 50 * ms, 1000},
		{"unknown length", 100_000, -1, false, 100 * ms, 20 * ms, 20_000},
		{"at most a socket buffer", 10 << 20, -1, false, 100 * ms, 50 * ms, maxInFlight},
	} {
		if got := inFlight(tc.read, tc.length, tc.eof, tc.elapsed, tc.rtt); got != tc.want {
			t.Errorf("%s: inFlight = %d, want %d", tc.name, got, tc.want)
		}
	}
}
