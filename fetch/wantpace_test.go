package fetch

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestInboundPacesWantLists: a peer sending large want lists (2,500 wants,
// under maxWantlistBytes) back to back has them handed on no faster than
// wantBytesPerSecond after a burst of wantBurst (they all reached boxo's
// engine at once, 54 a second in the audit's run, each a lookup per want
// and, with the peer's ledger full, a pass over it under the engine's one
// lock); another peer's want list, sent after all of them, is handed on
// before the last of them.
func TestInboundPacesWantLists(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed, flood, good := loopHost(t), loopHost(t), loopHost(t)
	fh := filterHost{Host: seed, gate: new(Gater), pace: newWantPacer()}
	msgs := recordMessages(fh)
	for _, h := range []interface {
		Connect(context.Context, peer.AddrInfo) error
	}{flood, good} {
		if err := h.Connect(ctx, peer.AddrInfo{ID: seed.ID(), Addrs: seed.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	big := wantMessage(t, 2500)
	var wire bytes.Buffer
	if err := big.ToNetV1(&wire); err != nil {
		t.Fatal(err)
	}
	size := wire.Len()
	const lists = 10
	s, err := flood.NewStream(ctx, seed.ID(), "/ipfs/bitswap/1.2.0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	sent := make(chan error, 1)
	go func() {
		for range lists {
			if _, err := s.Write(wire.Bytes()); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	start, got, goodAt := time.Now(), 0, -1
	for got < lists {
		var p peer.ID
		select {
		case p = <-msgs:
		case <-ctx.Done():
			t.Fatalf("%d of %d want lists handed on in %v", got, lists, time.Since(start))
		}
		if p == good.ID() {
			goodAt = got
			continue
		}
		got++
		elapsed := time.Since(start)
		if bound := wantBurst + int(elapsed.Seconds()*wantBytesPerSecond) + size; got*size > bound {
			t.Fatalf("%d want lists of %d bytes handed on in %v, want at most %d bytes by then", got, size, elapsed, bound)
		}
		if got == 1 {
			if err := <-sent; err != nil { // all written (the transport buffers them)
				t.Fatal(err)
			}
			if _, err := writeWants(ctx, good, seed.ID(), wantMessage(t, 10)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if goodAt < 0 {
		t.Errorf("another peer's want list was handed on after the flooding peer's %d, want before the last", lists)
	}
	t.Logf("%d want lists of %d bytes in %v; another peer's after %d of them", lists, size, time.Since(start), goodAt)
}
