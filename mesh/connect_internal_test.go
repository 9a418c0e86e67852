package mesh

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.5}
	tests := []struct {
		name     string
		failures int
		u        float64
		want     time.Duration
	}{
		{"first failure, no jitter drawn", 1, 0, 250 * time.Millisecond},
		{"first failure, most jitter", 1, 0.999999, 125*time.Millisecond + 125},
		{"second doubles", 2, 0, 500 * time.Millisecond},
		{"fifth", 5, 0, 4 * time.Second},
		{"eighth reaches the cap", 8, 0, 30 * time.Second},
		{"far past the cap", 1000, 0, 30 * time.Second},
		{"cap with half jitter", 1000, 0.5, 22500 * time.Millisecond},
		{"zero failures counts as one", 0, 0, 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := b.Delay(tt.failures, tt.u)
			// float rounding: within a microsecond
			if d := got - tt.want; d < -time.Microsecond || d > time.Microsecond {
				t.Errorf("Delay(%d, %v) = %v, want %v", tt.failures, tt.u, got, tt.want)
			}
		})
	}
}

// fakePeer is a bootstrap peer for the redialer: dials fail while down.
type fakePeer struct {
	mu    sync.Mutex
	up    bool
	conn  bool
	dials []time.Duration // since start
	start time.Time
}

func (f *fakePeer) dial(ctx context.Context, ai peer.AddrInfo) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials = append(f.dials, time.Since(f.start))
	if !f.up {
		return errors.New("connection refused")
	}
	f.conn = true
	return nil
}

func (f *fakePeer) connected(peer.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conn
}

func (f *fakePeer) set(up, conn bool) {
	f.mu.Lock()
	f.up, f.conn = up, conn
	f.mu.Unlock()
}

func (f *fakePeer) dialTimes() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.dials...)
}

// TestRedialerBackoffAndPromptReconnect: dials of a peer that is down are
// spaced as the policy says; once up it is connected at the next dial; the
// drop of a connection that lasted Max is redialled at once, and the
// backoff starts again from Min; the drop of a short one waits.
func TestRedialerBackoffAndPromptReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := &fakePeer{start: time.Now()}
		kick := make(chan struct{}, 1)
		var mu sync.Mutex
		var states []peerState
		r := redialer{
			policy:    Backoff{Min: 250 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.5},
			rand:      func() float64 { return 0 }, // no jitter: exact waits
			target:    func() peer.AddrInfo { return peer.AddrInfo{ID: "seed"} },
			connected: f.connected,
			dial:      f.dial,
			report: func(_ peer.ID, s peerState, _ error) {
				mu.Lock()
				states = append(states, s)
				mu.Unlock()
			},
			kick: kick,
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.run(ctx)
		}()
		// Down: dials at 0, 0.25, 0.75, 1.75, 3.75, 5.75 s (capped at 2 s).
		time.Sleep(5*time.Second + 800*time.Millisecond)
		synctest.Wait()
		want := []time.Duration{0, 250 * time.Millisecond, 750 * time.Millisecond, 1750 * time.Millisecond, 3750 * time.Millisecond, 5750 * time.Millisecond}
		if got := f.dialTimes(); !equalDurations(got, want) {
			t.Fatalf("dials at %v, want %v", got, want)
		}
		// Up: the next scheduled dial (7.75 s) connects.
		f.set(true, false)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if !f.connected("") {
			t.Fatalf("not connected after the peer came up; dials at %v", f.dialTimes())
		}
		// Connected for Max (2 s): a disconnect (the node's watcher kicks)
		// is redialled at once, and the backoff starts again from Min.
		time.Sleep(2200 * time.Millisecond) // now 10 s
		f.set(false, false)
		kick <- struct{}{}
		synctest.Wait()
		if got := f.dialTimes(); got[len(got)-1] != 10*time.Second {
			t.Fatalf("after a disconnect at 10 s of a connection made at 7.75 s: dials at %v, want one at once", got)
		}
		f.set(true, false)
		time.Sleep(250 * time.Millisecond)
		synctest.Wait()
		if got := f.dialTimes(); !f.connected("") || got[len(got)-1] != 10250*time.Millisecond {
			t.Fatalf("want a reconnect 250 ms after the failed redial; dials at %v", got)
		}
		// A connection dropped after 250 ms counts as a failure: no
		// redial at once (a peer that accepts and drops us must not be
		// redialled in a tight loop), the next after Delay(2) = 500 ms.
		time.Sleep(250 * time.Millisecond) // now 10.5 s
		f.set(true, false)
		before := len(f.dialTimes())
		kick <- struct{}{}
		synctest.Wait()
		if got := f.dialTimes(); len(got) != before {
			t.Fatalf("a connection that lasted 250 ms was redialled at once: dials at %v", got)
		}
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		if got := f.dialTimes(); len(got) != before+1 || got[len(got)-1] != 11*time.Second {
			t.Fatalf("after a connection that lasted 250 ms: dials at %v, want the next at 11 s", got)
		}
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if states[0] != stateDown || states[len(states)-1] != stateConnected {
			t.Errorf("states reported %v, want down first and connected last", states)
		}
	})
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
