package fetch

import (
	"testing"
	"time"
)

func TestLookAgain(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name           string
		known, waiting bool
		at             time.Duration // after the last lookup, at t0
		want           bool
		wantNext       time.Duration // after t0; 0: nothing due
	}{
		{"no provider known", false, true, time.Minute, false, 0},
		{"nothing waits on peers", true, false, time.Minute, false, 0},
		{"looked up lately", true, true, time.Second, false, provRefresh},
		{"due", true, true, provRefresh, true, 0},
		{"long due", true, true, time.Minute, true, 0},
	} {
		now := t0.Add(tc.at)
		s := newSoon(now)
		if got := lookAgain(tc.known, tc.waiting, t0, now, s); got != tc.want {
			t.Errorf("%s: lookAgain = %v, want %v", tc.name, got, tc.want)
		}
		want := now.Add(time.Minute)
		if tc.wantNext != 0 {
			want = t0.Add(tc.wantNext)
		}
		if !s.next.Equal(want) {
			t.Errorf("%s: next look at %v, want %v", tc.name, s.next.Sub(t0), want.Sub(t0))
		}
	}
}
