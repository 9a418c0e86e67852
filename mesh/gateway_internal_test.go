package mesh

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestGatewayUnboundedOpenFails: with no MaxBuffer (negative), a fetch
// that fails to open (here the fetcher is closed, as when the node closes
// under a parked request that reads on) returns its error; it released
// the nil budget and panicked the request's handler.
func TestGatewayUnboundedOpenFails(t *testing.T) {
	n, err := New(context.Background(), Config{Name: "gw-open", InMemory: true,
		ListenAddrs: LoopbackAddrs(RoleApp), MDNS: Off, NATPortMap: Off})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	g := n.Gateway(GatewayConfig{MaxBuffer: -1})
	c, err := cid.NewPrefixV1(cid.Raw, mh.SHA2_256).Sum([]byte("parked"))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.fetcher.Close(); err != nil {
		t.Fatal(err)
	}
	s := &source{g: g, ctx: context.Background(), t: fetch.Target{Cid: c}, size: -1, leaf: -1}
	if err := s.open(0); err == nil {
		t.Error("open on a closed fetcher succeeded")
	}
}

// lastByteAt is a fetch whose last byte came at a set time.
type lastByteAt struct{ at time.Time }

func (l *lastByteAt) LastByte() time.Time { return l.at }

// TestByteWatchAfterSleep: the gateway's watch of a response's sources
// runs late when the process slept through it (a laptop whose monotonic
// clock counts the sleep, as on Windows: a stopped process here). It then
// gives the sources FirstByteTimeout from the wake instead of cutting the
// response at once; a source still silent that long after is cut as
// before. (Timers in a synctest bubble fire when due, so the test stops
// the watch's timer and runs the late check itself, as the late timer
// would.)
func TestByteWatchAfterSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &lastByteAt{at: time.Now()}
		var mu sync.Mutex
		var cause error
		w := watchBytes(src, 20*time.Second, func(err error) {
			mu.Lock()
			cause = err
			mu.Unlock()
		})
		got := func() error {
			mu.Lock()
			defer mu.Unlock()
			return cause
		}
		w.mu.Lock()
		w.t.Stop()
		w.mu.Unlock()
		time.Sleep(10 * time.Minute) // asleep
		w.check()
		if cause := got(); cause != nil {
			t.Fatalf("cut at the wake: %v", cause)
		}
		time.Sleep(20*time.Second - time.Millisecond)
		synctest.Wait()
		if cause := got(); cause != nil {
			t.Fatalf("cut %v after the wake, want FirstByteTimeout (20 s): %v", 20*time.Second-time.Millisecond, cause)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if cause := got(); !errors.Is(cause, errNoByte) {
			t.Fatalf("a source silent for 20 s after the wake: cause %v, want errNoByte", cause)
		}
		w.stop()
	})
}
