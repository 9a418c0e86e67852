package announce

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestSummarySlotsPerPeer: one peer holding as many silent streams as the
// service answers at once (its global cap) does not keep another peer's
// request from being answered: one peer gets summaryPerPeer streams, and
// each waits summaryReadTimeout for its request. Every other asker was
// refused while the streams were held (10 s each, reopened).
func TestSummarySlotsPerPeer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seedHost, _, seedSvc := summaryPeer(t, nil, 0)
	atkHost, _, _ := summaryPeer(t, nil, 0)
	appHost, _, app := summaryPeer(t, nil, 0)
	seed := peer.AddrInfo{ID: seedHost.ID(), Addrs: seedHost.Addrs()}
	for _, h := range []interface {
		Connect(context.Context, peer.AddrInfo) error
	}{atkHost, appHost} {
		if err := h.Connect(ctx, seed); err != nil {
			t.Fatal(err)
		}
	}
	var held []network.Stream
	for range DefaultSummaryConcurrency {
		st, err := atkHost.NewStream(ctx, seedHost.ID(), SummaryProtocol("sum"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte{SummaryVersion}); err != nil { // half a request, then silence
			t.Fatal(err)
		}
		held = append(held, st)
	}
	defer func() {
		for _, st := range held {
			st.Reset()
		}
	}()
	// Until the service answers as many of them as it will at once.
	for busy := false; !busy; {
		seedSvc.mu.Lock()
		a := seedSvc.askers[atkHost.ID()]
		busy = a != nil && a.active == min(summaryPerPeer, DefaultSummaryConcurrency)
		seedSvc.mu.Unlock()
		select {
		case <-ctx.Done():
			t.Fatal("the silent streams never reached the service")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if _, err := app.Request(ctx, seedHost.ID(), SummaryRequest{Others: true}); err != nil {
		t.Errorf("Request beside one peer's %d silent streams = %v, want an answer", len(held), err)
	}
}

// TestSummaryOthersRateLimited: a peer asking again and again for the
// other holders gets them summaryOthersBurst times, then once per
// summaryOthersEvery, its own roots only otherwise (a loop of such requests had a seed send 18 to 84 answers of 1 MiB
// a second); another peer still gets them, and a holder added since the
// last answer is listed (a small table is not cached).
func TestSummaryOthersRateLimited(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	table := NewTable(TableConfig{})
	defer table.Close()
	seedHost, _, _ := summaryPeer(t, table, 0)
	table.Add(testPeer(t), time.Minute, rawRoot(t, 1))
	ask := func(h interface {
		Connect(context.Context, peer.AddrInfo) error
	}, s *SummaryService, n int) (listed int) {
		if err := h.Connect(ctx, peer.AddrInfo{ID: seedHost.ID(), Addrs: seedHost.Addrs()}); err != nil {
			t.Fatal(err)
		}
		for range n {
			sum, err := s.Request(ctx, seedHost.ID(), SummaryRequest{Others: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(sum.Others) > 0 {
				listed++
			}
		}
		return listed
	}
	loopHost, _, loop := summaryPeer(t, nil, 0)
	start := time.Now()
	got := ask(loopHost, loop, 3*summaryOthersBurst)
	refilled := int(time.Since(start) / summaryOthersEvery) // a slow machine's loop
	if got < summaryOthersBurst || got > summaryOthersBurst+refilled {
		t.Errorf("%d requests in a row listed other holders %d times, want %d (+%d refilled)", 3*summaryOthersBurst, got, summaryOthersBurst, refilled)
	}
	otherHost, _, other := summaryPeer(t, nil, 0)
	if got := ask(otherHost, other, 1); got != 1 {
		t.Errorf("another peer's request listed other holders %d times, want 1", got)
	}
	fresh, _, _ := summaryPeer(t, nil, 0)
	table.Add(fresh.ID(), time.Minute, rawRoot(t, 2))
	sum, err := other.Request(ctx, seedHost.ID(), SummaryRequest{Others: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Others) != 2 {
		t.Errorf("after a new holder, others = %d holders, want 2", len(sum.Others))
	}
}
