package announce

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
)

// failingRouter is a DHT whose every provide fails, as on a node with no
// DHT server among its peers. Each provide is signalled on entered, waits
// until open is closed, is counted, and is sent on tried.
type failingRouter struct {
	entered chan struct{}
	open    chan struct{}
	tried   chan cid.Cid

	mu sync.Mutex
	n  map[cid.Cid]int
}

func newFailingRouter() *failingRouter {
	return &failingRouter{entered: make(chan struct{}, 1), open: make(chan struct{}), tried: make(chan cid.Cid, 1024), n: make(map[cid.Cid]int)}
}

func (r *failingRouter) Provide(ctx context.Context, c cid.Cid, _ bool) error {
	select {
	case r.entered <- struct{}{}:
	default:
	}
	select {
	case <-r.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.mu.Lock()
	r.n[c]++
	r.mu.Unlock()
	select {
	case r.tried <- c:
	default:
	}
	return errors.New("failed to find any peer in table")
}

// attempts returns how many times c was provided.
func (r *failingRouter) attempts(c cid.Cid) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[c]
}

func (r *failingRouter) FindProvidersAsync(ctx context.Context, _ cid.Cid, _ int) <-chan peer.AddrInfo {
	ch := make(chan peer.AddrInfo)
	close(ch)
	return ch
}

var _ routing.ContentRouting = (*failingRouter)(nil)

// TestProvideRetryForgetsRootsNotHeld: a provide that failed is tried
// again (after 1 s, doubling) only for content the store still holds. On a
// node whose provides fail, every root it had ever held, long evicted,
// stayed in the retry set and was provided again at every retry: memory
// and DHT lookups that grew with every distinct root the node fetched.
func TestProvideRetryForgetsRootsNotHeld(t *testing.T) {
	r := newFailingRouter()
	nd := newTestNet(t).node(nodeOpts{quota: 1 << 20, cfg: func(c *Config) { c.DisableDHT, c.DHT = false, r }})
	// A first root, whose provide waits: the loop has queued what the
	// store held at its start (nothing since), so each root below is
	// queued once, by its HAVE.
	importSeed(t, nd, 999, 100<<10)
	select {
	case <-r.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no provide began")
	}
	// 40 roots of 100 KiB through a 1 MiB store, all queued before the
	// first provide ends: at most 10 are still held.
	const total = 40
	roots := make([]cid.Cid, total)
	for i := range roots {
		roots[i] = importSeed(t, nd, uint64(1000+i), 100<<10)
	}
	held := make(map[cid.Cid]bool)
	for _, ri := range nd.st.Roots() {
		held[ri.Cid] = true
	}
	if len(held) == 0 || len(held) >= total {
		t.Fatalf("the store holds %d of %d roots, want some but not all", len(held), total)
	}
	close(r.open)
	// Every held root is provided again by the first retry.
	timeout := time.After(20 * time.Second)
	for again := 0; again < len(held); {
		select {
		case c := <-r.tried:
			if held[c] && r.attempts(c) == 2 {
				again++
			}
		case <-timeout:
			t.Fatalf("the retry did not provide the %d held roots again", len(held))
		}
	}
	for _, c := range roots {
		if n := r.attempts(c); !held[c] && n > 1 {
			t.Errorf("root %s, no longer held, provided %d times; want once (its own provide)", c, n)
		}
	}
}
