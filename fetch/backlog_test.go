package fetch_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// stallingStore is a store whose writes of leaves wait until release is
// called, telling put of each as it begins.
type stallingStore struct {
	*store.Store
	put      chan struct{}
	released chan struct{}
	once     sync.Once
}

func (s *stallingStore) Put(ctx context.Context, b blocks.Block) error {
	if len(b.RawData()) > 4<<10 {
		s.put <- struct{}{}
		<-s.released
	}
	return s.Store.Put(ctx, b)
}

func (s *stallingStore) release() { s.once.Do(func() { close(s.released) }) }

// TestStoreBacklogHoldsBack: four fetches from one provider into a store
// that takes none of their leaves (four leaves, one per fetch, wait in its
// writes: the backlog is full): the client reads no more of the
// provider's blocks, so the provider reads few ahead of them (without the
// backlog it sent all 32 leaves asked); once the store moves, each fetch
// completes with every byte right.
func TestStoreBacklogHoldsBack(t *testing.T) {
	prov := newNode(t, fetch.Config{})
	ps := providers{}
	var as []asset
	for k := range 4 {
		a := makeAsset(t, 97+uint64(k), 8*MiB)
		prov.hold(t, a)
		ps[a.t.Cid] = []peer.AddrInfo{prov.info()}
		as = append(as, a)
	}
	st := &stallingStore{Store: newStore(t, -1), put: make(chan struct{}, 64), released: make(chan struct{})}
	t.Cleanup(st.release) // before the Fetcher's Close, which waits for the writes
	cl, err := fetch.New(fetch.Config{Host: newHost(t), Store: st, Providers: ps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	var rs []*fetch.Reader
	for _, a := range as {
		r, err := cl.Open(context.Background(), a.t)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		rs = append(rs, r)
	}
	for range 4 { // the backlog: 4 MiB of leaves being stored
		select {
		case <-st.put:
		case <-time.After(30 * time.Second):
			t.Fatal("four leaves not being stored")
		}
	}
	// The client now holds the provider's next block back, up to a
	// second; meanwhile the provider reads at most its outstanding 2 MiB
	// ahead.
	time.Sleep(500 * time.Millisecond) // an interval to observe, not synchronisation
	served := prov.f.Stats().ServedBytes
	st.release()
	if served > 10*MiB {
		t.Errorf("provider served %d MiB while the client's store took nothing, want at most 10", served/MiB)
	}
	for k, r := range rs {
		checkBytes(t, readAll(t, r), as[k].data)
	}
}

// TestPeerLeavesReadableWhileStoring: a fetch from a provider into a
// store whose writes all wait: every leaf is delivered to the reader
// while the first is still being written. Stored in the loop that took the
// blocks from bitswap, the leaves behind the first waited in bitswap's
// channels, neither readable nor counted in the backlog, until the reader
// asked for them again (6 s, the provider sending them twice).
func TestPeerLeavesReadableWhileStoring(t *testing.T) {
	prov := newNode(t, fetch.Config{})
	a := makeAsset(t, 91, 3*MiB) // under the backlog: nothing held back
	prov.hold(t, a)
	st := &stallingStore{Store: newStore(t, -1), put: make(chan struct{}, 64), released: make(chan struct{})}
	cl, err := fetch.New(fetch.Config{Host: newHost(t), Store: st, Providers: providers{a.t.Cid: {prov.info()}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := cl.Open(ctx, a.t)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer st.release() // before the Reader's Close, which waits for the writes
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("leaves not readable while the store writes (%d writes begun): %v", len(st.put), err)
	}
	checkBytes(t, b, a.data)
	s := r.Stats()
	if s.PeerBytes != int64(len(a.data)) {
		t.Errorf("%d bytes from the peer, want all %d", s.PeerBytes, len(a.data))
	}
	// Leaves left in bitswap's channels came once the reader, having
	// waited stuckAfter on them, asked for them again.
	if s.TTLB >= fetch.StuckAfter {
		t.Errorf("last byte after %v: leaves were asked again (at %v)", s.TTLB, fetch.StuckAfter)
	}
}
