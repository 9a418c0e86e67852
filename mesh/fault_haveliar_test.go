//go:build fault

package mesh_test

import (
	"context"
	"sync"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio"

	"github.com/meshcdn/meshcdn/mesh"
)

// haveLiar is an attacker that answers every want it gets with HAVE and
// never sends a block. It connects to n.
func haveLiar(ctx context.Context, t *testing.T, n *mesh.Node) host.Host {
	t.Helper()
	h := attacker(t)
	var mu sync.Mutex
	var out network.Stream
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	reply := func(m bsmsg.BitSwapMessage) {
		r := bsmsg.New(false)
		for _, e := range m.Wantlist() {
			if !e.Cancel {
				r.AddHave(e.Cid)
			}
		}
		if r.Empty() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if out == nil {
			s, err := h.NewStream(ctx, n.ID(), bitswapProtocols...)
			if err != nil {
				return
			}
			out = s
		}
		if r.ToNetV1(out) != nil {
			out.Reset()
			out = nil
		}
	}
	for _, p := range bitswapProtocols {
		h.SetStreamHandler(p, func(s network.Stream) {
			wg.Add(1)
			defer wg.Done()
			defer s.Reset()
			rd := msgio.NewVarintReaderSize(s, network.MessageSizeMax)
			for ctx.Err() == nil {
				m, _, err := bsmsg.FromMsgReader(rd)
				if err != nil {
					return
				}
				reply(m)
			}
		})
	}
	connectTo(ctx, t, h, n)
	return h
}

// TestFaultHaveLiar replays attack 6 of issue 11: a peer answers HAVE to
// every want and never sends a block. Bitswap's sessions asked it for the
// blocks and waited: 5 of 7 peer-only fetches failed after 5 s although an
// honest seed was connected, and the liar was never penalised. Now a HAVE
// want-block not answered by the block within 2 s, while another peer said
// HAVE of it, turns into DONT_HAVE from that peer for that block, so the
// session asks the seed; a peer that broke three such promises without
// delivering anything is penalised; and a reader stuck 3 s on a leaf asks
// it again on a new session. Three peer-only fetches with the liar
// connected complete (bound: the baseline plus 6 s, or 2x), all from the
// seed; the liar is penalised, the seed is not.
func TestFaultHaveLiar(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := newBed(t, 4, nil)
	base := b.baseline(ctx, t, "a0.bin")
	heap0 := liveHeapMiB()
	liar := haveLiar(ctx, t, b.app)
	if err := b.app.WaitPeers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	var worst time.Duration
	for _, path := range []string{"a1.bin", "a2.bin", "a3.bin"} {
		d, st, err := b.fetch(ctx, b.app, path)
		if err != nil {
			t.Fatalf("honest fetch of %s with a liar connected: %v (liar penalised %v, seed penalised %v)", path, err, b.app.Fetcher().Penalised(liar.ID()), b.app.Fetcher().Penalised(b.seed.ID()))
		}
		t.Logf("%s: %v (baseline %v, %.1fx)", path, d, base, float64(d)/float64(base))
		worst = max(worst, d)
		b.checkHonest(t, b.app, st)
	}
	// A fetch may pay the guard's deadline for a HAVE's block (2 s) and the
	// reader's re-ask of a stuck leaf on a new session (3 s) before the liar
	// is penalised: bounded, not within 2x on a loaded machine.
	if limit := max(2*base, base+6*time.Second); worst > limit {
		t.Errorf("slowest fetch with the liar connected took %v, want at most %v", worst, limit)
	}
	if !b.app.Fetcher().Penalised(liar.ID()) {
		t.Errorf("the liar is not penalised")
	}
	heap1 := liveHeapMiB()
	t.Logf("live heap: %.0f MiB before, %.0f MiB after", heap0, heap1)
	// The whole process is measured: the seed, the liar and three apps
	// with their read-ahead windows (up to 32 MiB each while a fetch
	// runs), so the bound is the one the other attack tests use.
	if heap1-heap0 > 96 {
		t.Errorf("live heap grew by %.0f MiB, want at most 96", heap1-heap0)
	}
}
