package expiry

import (
	"fmt"
	"testing"
	"time"
)

// TestSetDeadlines: a key is held until its deadline, not at it; a later
// Add replaces the deadline.
func TestSetDeadlines(t *testing.T) {
	var s Set[string]
	t0 := time.Unix(1000, 0)
	s.Add("a", t0.Add(time.Minute), t0)
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{{0, true}, {time.Minute - 1, true}, {time.Minute, false}, {time.Hour, false}} {
		if got := s.Has("a", t0.Add(c.at)); got != c.want {
			t.Errorf("Has at +%v = %v, want %v", c.at, got, c.want)
		}
	}
	if s.Has("b", t0) {
		t.Error("a key never added is held")
	}
	s.Add("a", t0.Add(time.Hour), t0)
	if !s.Has("a", t0.Add(2*time.Minute)) {
		t.Error("a later Add did not extend the deadline")
	}
}

// TestSetSweeps: once the set holds sweepAt keys, an Add drops the
// expired ones and keeps the live ones, and the next sweep waits until the
// set has doubled.
func TestSetSweeps(t *testing.T) {
	var s Set[string]
	t0 := time.Unix(1000, 0)
	for i := range sweepAt - 1 {
		s.Add(fmt.Sprint("old", i), t0.Add(time.Second), t0)
	}
	s.Add("live", t0.Add(time.Hour), t0)
	later := t0.Add(time.Minute)
	s.Add("new", later.Add(time.Hour), later)
	if s.Len() != 2 || !s.Has("live", later) || !s.Has("new", later) {
		t.Fatalf("after a sweep: %d keys held, want the live and the new one", s.Len())
	}
	for i := range sweepAt - 2 {
		s.Add(fmt.Sprint("short", i), later.Add(time.Second), later)
	}
	s.Add("last", later.Add(time.Hour), later.Add(time.Minute))
	if s.Len() != 3 {
		t.Errorf("%d keys after the sweep of %d, want 3 (live, new, last)", s.Len(), sweepAt)
	}
}
