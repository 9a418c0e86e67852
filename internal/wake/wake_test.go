package wake

import (
	"testing"
	"time"
)

// TestSlept: a timer Late or more past its due time slept; one run on
// time, early, or late by a loaded machine's delays did not.
func TestSlept(t *testing.T) {
	due := time.Unix(1000, 0)
	for _, c := range []struct {
		late time.Duration
		want bool
	}{{-time.Second, false}, {0, false}, {200 * time.Millisecond, false}, {Late - 1, false}, {Late, true}, {time.Hour, true}} {
		if got := Slept(due, due.Add(c.late)); got != c.want {
			t.Errorf("run %v after due: Slept = %v, want %v", c.late, got, c.want)
		}
	}
}
