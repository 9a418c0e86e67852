package fetch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
)

// lateProviders is a provider table that learns of providers while a fetch
// runs.
type lateProviders struct {
	mu sync.Mutex
	by map[cid.Cid][]peer.AddrInfo
}

func (p *lateProviders) add(c cid.Cid, ai peer.AddrInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.by == nil {
		p.by = make(map[cid.Cid][]peer.AddrInfo)
	}
	p.by[c] = append(p.by[c], ai)
}

func (p *lateProviders) FindProvidersAsync(ctx context.Context, c cid.Cid, n int) <-chan peer.AddrInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan peer.AddrInfo, len(p.by[c]))
	for _, ai := range p.by[c] {
		ch <- ai
	}
	close(ch)
	return ch
}

// TestLateProviderAsked: a fetch that found one provider at Open, which
// serves slowly, asks a provider that became known after Open (a holder of
// a flash crowd that finished later): the fetch takes seconds, not the
// slow provider's minute. Without the providers looked up again the new
// one is never asked (bitswap's own search is off).
func TestLateProviderAsked(t *testing.T) {
	const size = 6 * MiB
	a := makeAsset(t, 61, size)
	slow := newNode(t, fetch.Config{ServeBytesPerSecond: 100 << 10, ServeBurst: 100 << 10})
	slow.hold(t, a)
	fast := newNode(t, fetch.Config{})
	fast.hold(t, a)
	table := &lateProviders{}
	table.add(a.t.Cid, slow.info())
	c := newNode(t, fetch.Config{Providers: table})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	r, err := c.f.Open(ctx, a.t)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	table.add(a.t.Cid, fast.info())
	start := time.Now()
	got := readAll(t, r)
	took := time.Since(start)
	checkBytes(t, got, a.data)
	st := r.Stats()
	// slow alone: 60 s (100 KiB/s for 6 MiB)
	if took > 30*time.Second || st.Peers[fast.h.ID()] < size/2 {
		t.Fatalf("fetch took %v, %d bytes from the provider known late, %d from the slow one; want < 30 s, most from the late one",
			took, st.Peers[fast.h.ID()], st.Peers[slow.h.ID()])
	}
	t.Logf("took %v: %d bytes from the late provider, %d from the slow one", took, st.Peers[fast.h.ID()], st.Peers[slow.h.ID()])
}

// TestProviderKnownByIDDialledLater: a provider the table knows by ID only
// (the mesh's table learns of a peer's fetch or holding by gossip, and of
// its addresses from a later message) is dialled once its addresses reach
// the peerstore, during the fetch. Before, the fetch dialled it at once,
// failed ("no addresses") and never again: with no origin the fetch failed
// after StallTimeout, and in a 50-app flash crowd about 4,000 such dials
// failed per run, the crowd members behind them out of reach.
func TestProviderKnownByIDDialledLater(t *testing.T) {
	a := makeAsset(t, 66, 2*MiB)
	holder := newNode(t, fetch.Config{})
	holder.hold(t, a)
	c := newNode(t, fetch.Config{StallTimeout: 10 * time.Second,
		Providers: providers{a.t.Cid: {{ID: holder.h.ID()}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := c.f.Open(ctx, a.t) // no origin: only the holder can send it
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		time.Sleep(300 * time.Millisecond) // the addresses come later, by gossip
		c.h.Peerstore().AddAddrs(holder.h.ID(), holder.h.Addrs(), time.Minute)
	}()
	checkBytes(t, readAll(t, r), a.data)
	if got := r.Stats().Peers[holder.h.ID()]; got != int64(len(a.data)) {
		t.Errorf("%d bytes from the holder, want all %d", got, len(a.data))
	}
}
