package fetch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/fetch"
)

// crowd is a static fetch.Crowd: the peers fetching each root, set before
// the fetches open.
type crowd map[cid.Cid][]peer.ID

func (c crowd) Fetchers(root cid.Cid) []peer.ID { return c[root] }

// TestStripingSplitsOrigin: two nodes fetching the same file at once, each
// told that both fetch it, take different leaves from the origin and the
// rest from each other: the origin sends about one copy, where without
// striping it sends two.
func TestStripingSplitsOrigin(t *testing.T) {
	a := makeAsset(t, 93, 12*MiB)
	size := int64(len(a.data))
	run := func(noStriping bool) (int64, [2]fetch.Stats) {
		o := newOrigin(t, a.data)
		o.limit = rate.NewLimiter(16*MiB, 64<<10)
		tg := a.t
		tg.URL = o.URL
		cr, provs := crowd{}, providers{}
		var ns [2]*node
		for k := range ns {
			ns[k] = newNode(t, fetch.Config{Crowd: cr, Providers: provs, NoStriping: noStriping})
		}
		cr[a.t.Cid] = []peer.ID{ns[0].h.ID(), ns[1].h.ID()}
		provs[a.t.Cid] = []peer.AddrInfo{ns[0].info(), ns[1].info()}
		var sts [2]fetch.Stats
		var wg sync.WaitGroup
		for k, n := range ns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := n.f.Open(context.Background(), tg)
				if err != nil {
					t.Error(err)
					return
				}
				defer r.Close()
				checkBytes(t, readAll(t, r), a.data)
				sts[k] = r.Stats()
			}()
		}
		wg.Wait()
		return o.sent.Load(), sts
	}
	plain, pst := run(true)
	striped, sst := run(false)
	t.Logf("origin sent %.2f copies without striping (peer bytes %d, %d), %.2f with (peer bytes %d, %d)",
		float64(plain)/float64(size), pst[0].PeerBytes, pst[1].PeerBytes,
		float64(striped)/float64(size), sst[0].PeerBytes, sst[1].PeerBytes)
	if striped*2 > size*3 {
		t.Errorf("striping: the origin sent %d bytes for a %d-byte file, want at most 1.5 copies", striped, size)
	}
	for k, st := range sst {
		if st.PeerBytes == 0 || st.OriginSentBytes == 0 {
			t.Errorf("node %d: %d bytes from its peer, origin sent it %d: the file was not split", k, st.PeerBytes, st.OriginSentBytes)
		}
	}
}

// TestStripingSilentMember is the issue's "a node that announces a fetch
// and sends nothing delays no one beyond peer timeout + origin time": the
// crowd names a connected node that holds nothing. The leaves it owns go
// to the origin once PeerTimeout and the origin's time for a leaf have
// passed (the fetch does not wait for StallTimeout, 10 s here, when that
// node is penalised and leaves the stripe), and it is then penalised.
func TestStripingSilentMember(t *testing.T) {
	a := makeAsset(t, 94, 8*MiB)
	o := newOrigin(t, a.data)
	o.limit = rate.NewLimiter(16*MiB, 64<<10)
	tg := a.t
	tg.URL = o.URL
	silent := newNode(t, fetch.Config{})
	const stall = 10 * time.Second
	cl := newNode(t, fetch.Config{
		Crowd:        crowd{a.t.Cid: {silent.h.ID()}},
		Providers:    providers{a.t.Cid: {silent.info()}},
		StallTimeout: stall,
	})
	r, err := cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkBytes(t, readAll(t, r), a.data)
	st := r.Stats()
	t.Logf("TTLB %v; origin %d bytes, peers %d", st.TTLB, st.OriginBytes, st.PeerBytes)
	// The bound: PeerTimeout (200 ms) and the origin's time for a leaf
	// (1 s assumed until measured) past what the origin takes for the
	// file (0.5 s at its pace), with seconds to spare for a loaded
	// machine, and well under StallTimeout.
	if st.TTLB >= stall/2 || st.OriginBytes != int64(len(a.data)) {
		t.Errorf("TTLB %v, origin bytes %d: the silent member's leaves waited for its penalty", st.TTLB, st.OriginBytes)
	}
	deadline := time.Now().Add(stall + 10*time.Second)
	for !cl.f.Penalised(silent.h.ID()) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // judged StallTimeout after the start
	}
	if !cl.f.Penalised(silent.h.ID()) {
		t.Errorf("the silent member was not penalised")
	}
}
