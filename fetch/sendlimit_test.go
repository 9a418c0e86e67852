package fetch

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestSendDeadline(t *testing.T) {
	for _, tc := range []struct {
		size int
		want time.Duration
	}{
		{0, 2 * time.Second},
		{128 << 10, 3 * time.Second},
		{1 << 20, 10 * time.Second},
	} {
		if got := sendDeadline(tc.size); got != tc.want {
			t.Errorf("sendDeadline(%d) = %v, want %v", tc.size, got, tc.want)
		}
	}
}

// TestSendLimiter walks a peer through the policy: sends in parallel until
// one misses its deadline, then one at a time (probation), cut when a send
// begun on probation misses too; sends begun before probation that miss
// count once; a peer that keeps up is never limited.
func TestSendLimiter(t *testing.T) {
	l := newSendLimiter()
	p := peer.ID("slow")
	t0 := time.Unix(1000, 0)
	var began []time.Time
	for range 8 {
		dl, ok := l.begin(p, 1<<20, t0)
		if !ok {
			t.Fatal("begin refused a fresh peer")
		}
		if want := t0.Add(10 * time.Second); !dl.Equal(want) {
			t.Fatalf("deadline %v, want %v", dl, want)
		}
		began = append(began, t0)
	}
	t1 := t0.Add(10 * time.Second)
	if v := l.end(p, began[0], true, t1); v != sendSlow {
		t.Fatalf("first miss: %v, want sendSlow", v)
	}
	for _, b := range began[1:] {
		if v := l.end(p, b, true, t1); v != sendOK {
			t.Fatalf("miss of a send begun before probation: %v, want sendOK", v)
		}
	}
	if _, ok := l.begin(p, 1<<20, t1); !ok {
		t.Fatal("probation refused the first send")
	}
	if _, ok := l.begin(p, 1<<20, t1); ok {
		t.Fatal("probation admitted a second send at once")
	}
	if l.refused(p, t1) {
		t.Fatal("a peer on probation is refused")
	}
	t2 := t1.Add(10 * time.Second)
	if v := l.end(p, t1, true, t2); v != sendCut {
		t.Fatalf("miss on probation: %v, want sendCut", v)
	}
	if !l.refused(p, t2) {
		t.Fatal("a cut peer is not refused")
	}
	if _, ok := l.begin(p, 1, t2.Add(cutFor-time.Second)); ok {
		t.Fatal("a cut peer was sent to")
	}
	if l.refused(p, t2.Add(cutFor)) {
		t.Fatal("the cut did not end")
	}

	// A peer that keeps up.
	q := peer.ID("fast")
	for i := range 100 {
		now := t0.Add(time.Duration(i) * time.Second)
		if _, ok := l.begin(q, 1<<20, now); !ok {
			t.Fatal("a draining peer was limited")
		}
		if v := l.end(q, now, false, now.Add(time.Second)); v != sendOK {
			t.Fatalf("a send in time: %v", v)
		}
	}
	// Probation ends after slowFor.
	r := peer.ID("once")
	l.begin(r, 1, t0)
	l.end(r, t0, true, t1)
	l.begin(r, 1, t1)
	l.end(r, t1, false, t1.Add(time.Second))
	l.begin(r, 1, t1.Add(slowFor))
	if _, ok := l.begin(r, 1, t1.Add(slowFor)); !ok {
		t.Fatal("probation did not end after slowFor")
	}
}

// TestSendStalled: a peer is stalled when no send to it has ended for
// sendBase while some are under way, or while on probation.
func TestSendStalled(t *testing.T) {
	l := newSendLimiter()
	p := peer.ID("p")
	t0 := time.Unix(1000, 0)
	l.begin(p, 1<<20, t0)
	l.begin(p, 1<<20, t0.Add(time.Second))
	if l.stalled(p, t0.Add(sendBase-time.Millisecond)) {
		t.Fatal("stalled before sendBase")
	}
	if !l.stalled(p, t0.Add(sendBase)) {
		t.Fatal("not stalled after sendBase without progress")
	}
	l.end(p, t0, false, t0.Add(sendBase))
	if l.stalled(p, t0.Add(sendBase+time.Second)) {
		t.Fatal("stalled right after a send ended")
	}
	l.end(p, t0.Add(time.Second), false, t0.Add(sendBase+time.Second))
	if l.stalled(p, t0.Add(time.Hour)) {
		t.Fatal("stalled with nothing under way")
	}
}

// TestSendLimiterReconnected: a peer cut for not reading (a laptop that
// slept while a seed sent to it) that connects again is on probation, one
// send at a time, not refused for the rest of cutFor; missing a deadline
// again cuts it again. A peer that was not cut is left as it was.
func TestSendLimiterReconnected(t *testing.T) {
	l := newSendLimiter()
	p := peer.ID("slept")
	t0 := time.Unix(1000, 0)
	l.begin(p, 1<<20, t0)
	t1 := t0.Add(10 * time.Second)
	l.end(p, t0, true, t1)
	l.begin(p, 1<<20, t1)
	t2 := t1.Add(10 * time.Second)
	if v := l.end(p, t1, true, t2); v != sendCut {
		t.Fatalf("miss on probation: %v, want sendCut", v)
	}
	back := t2.Add(5 * time.Second) // woke and redialled
	l.reconnected(p, back)
	if l.refused(p, back) {
		t.Fatal("a cut peer that connected again is still refused")
	}
	if _, ok := l.begin(p, 1<<20, back); !ok {
		t.Fatal("a cut peer that connected again was not sent to")
	}
	if _, ok := l.begin(p, 1<<20, back); ok {
		t.Fatal("a cut peer back was sent two blocks at once, want probation")
	}
	if v := l.end(p, back, true, back.Add(10*time.Second)); v != sendCut {
		t.Fatalf("a peer back that misses again: %v, want sendCut", v)
	}

	q := peer.ID("fresh")
	l.reconnected(q, t0)
	if _, ok := l.begin(q, 1, t0); !ok {
		t.Fatal("a fresh peer was refused")
	}
	if _, ok := l.begin(q, 1, t0); !ok {
		t.Fatal("a peer never cut is on probation after reconnecting")
	}
}
