package fetch_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestWantsMovedFromBusyHolder: bitswap's session gives each want-block to
// one of the peers that said HAVE and waits on it. Here two holders have
// served this node and say HAVE of every leaf; one sits on every
// want-block, as a crowd member at its serving cap does. Past the first
// leaf the reader reads nothing, so no hedge of a leaf it waits on
// applies: the leaves asked of the sitter are moved to the other holder,
// which has fewer of this node's want-blocks open, once they have waited
// busyAfter (500 ms; bitswap may pick the sitter again, and the next look
// tries again).
// Without that they wait at the sitter for as long as the reader does not
// need them (in a crowd, while the members holding them sit idle). The
// other holder answers HAVE 50 ms late, so that bitswap asks the sitter
// for most leaves.
func TestWantsMovedFromBusyHolder(t *testing.T) {
	sitWarm, sitWarmBlk := smallAsset(t, 81)
	holdWarm, holdWarmBlk := smallAsset(t, 82)
	a := makeAsset(t, 83, 8*MiB) // within the window: all asked at once
	leaves := leafBlocks(t, a)
	sitter := newScripted(t, append(leaves, sitWarmBlk)...)
	sitter.withhold = func(c cid.Cid) bool { return !c.Equals(sitWarmBlk.Cid()) }
	holder := newScripted(t, append(leaves, holdWarmBlk)...)
	holder.haveDelay = 50 * time.Millisecond // the session asks the sitter first
	cl := newNode(t, fetch.Config{Providers: providers{
		sitWarm.t.Cid:  {sitter.info()},
		holdWarm.t.Cid: {holder.info()},
		a.t.Cid:        {sitter.info(), holder.info()},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl.connectScripted(ctx, t, sitter, holder)
	cl.fetchWhole(t, sitWarm.t, sitWarm.data) // both are trusted
	cl.fetchWhole(t, holdWarm.t, holdWarm.data)

	r, err := cl.f.Open(ctx, a.t)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The reader takes the first leaf (asked first, directly, of one of
	// them; the peer hedge asks it of the other once the reader has waited
	// PeerTimeout) and then waits on nothing until every leaf has come, or
	// 4 s have passed.
	first := make([]byte, MiB)
	if _, err := io.ReadFull(r, first); err != nil {
		t.Fatalf("read: %v", err)
	}
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) && r.Stats().PeerBytes < int64(len(a.data)) {
		time.Sleep(10 * time.Millisecond)
	}
	st := r.Stats()
	t.Logf("without reading: %d of %d bytes from peers (%v)", st.PeerBytes, len(a.data), st.Peers)
	if st.PeerBytes < int64(len(a.data)) {
		t.Errorf("peers sent %d of %d bytes in 4 s: leaves asked of the sitter were not asked of the other holder", st.PeerBytes, len(a.data))
	}
	if n := cl.f.Stats().MovedWants; n == 0 {
		t.Errorf("Stats().MovedWants = 0, want the want-blocks moved from the sitter counted")
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	checkBytes(t, append(first, rest...), a.data)
}

// TestLateHolderCancelled: two holders new to this node say HAVE of every
// leaf; the sitter at once, and it sits on every want-block, the other
// 300 ms later, and it sends. The sitter's promises grow late and it is
// reset in bitswap (guard.checkPromises), or penalised; told it is gone,
// bitswap forgets what it asked of it and never cancels it, nor does the
// first want asked again of the other (firstwant.go, stillWanted). A
// holder at its serving cap sends such leaves when it gets to them, copies
// nobody wants: in a 50-app crowd able to dial each other, more than half
// of the copies apps received twice. Each leaf asked of the sitter is
// cancelled there once it has come from the other (guard.arrived).
func TestLateHolderCancelled(t *testing.T) {
	a := makeAsset(t, 85, 8*MiB)
	leaves := leafBlocks(t, a)
	sitter := newScripted(t, leaves...)
	sitter.withhold = func(cid.Cid) bool { return true }
	holder := newScripted(t, leaves...)
	holder.haveDelay = 300 * time.Millisecond // the session asks the sitter first
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {sitter.info(), holder.info()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl.connectScripted(ctx, t, sitter, holder)

	r, err := cl.f.Open(ctx, a.t)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	checkBytes(t, got, a.data)
	var asked []cid.Cid
	for _, b := range leaves {
		if sitter.askedBlock(b.Cid()) {
			asked = append(asked, b.Cid())
		}
	}
	if len(asked) == 0 {
		t.Fatal("the sitter was asked for no leaf: nothing to check")
	}
	uncancelled := func() []cid.Cid {
		return slices.DeleteFunc(slices.Clone(asked), sitter.cancelled)
	}
	if !sitter.awaitMessages(2*time.Second, func() bool { return len(uncancelled()) == 0 }) {
		t.Errorf("%d of the %d leaves asked of the sitter (all sent by the other holder) not cancelled there in 2 s: %v",
			len(uncancelled()), len(asked), uncancelled())
	}
}

// TestBusyHolderNotLiar: a holder new to this node (no block from it yet)
// says HAVE of both leaves of an asset and sends each block as a holder at
// its serving cap does over a slow link, 1 MiB in about 3.4 s, while
// another holder says HAVE too and sends nothing. The busy holder's
// promises go late within a few hundred milliseconds, and with no block
// delivered haveDeadline (2 s) after, the liar rule named it a liar and
// penalised it for Config.Penalty (lifted once its block came, but in the
// meantime its HAVEs were void and it counted as no holder). Its block's
// bytes arriving now keep its judgement waiting, and the delivered block
// clears it.
func TestBusyHolderNotLiar(t *testing.T) {
	a := makeAsset(t, 84, 2*MiB) // two leaves
	leaves := leafBlocks(t, a)
	busy := newScripted(t, leaves...)
	busy.trickle = 300 << 10
	sitter := newScripted(t, leaves...)
	sitter.withhold = func(cid.Cid) bool { return true }
	sitter.haveDelay = 50 * time.Millisecond // the session asks the busy one first
	o := newOrigin(t, a.data)
	tg := a.t
	tg.URL = o.URL
	// The origin does not join: what is judged is the busy holder alone.
	liar := &msgCounter{msg: "peer penalised: HAVEs never followed by blocks", peer: busy.h.ID().String()}
	cl := newNode(t, fetch.Config{PeerTimeout: time.Minute, StallTimeout: time.Minute, Logger: slog.New(liar),
		Providers: providers{a.t.Cid: {busy.info(), sitter.info()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl.connectScripted(ctx, t, busy, sitter)
	r := cl.open(t, tg)
	checkBytes(t, readAll(t, r), a.data)
	if n := liar.n.Load(); n > 0 {
		t.Error("the busy holder was penalised as a liar while its blocks were on their way")
	}
	if st := r.Stats(); st.PeerBytes != int64(len(a.data)) || st.OriginBytes != 0 {
		t.Errorf("PeerBytes %d, OriginBytes %d; want %d from peers", st.PeerBytes, st.OriginBytes, len(a.data))
	}
}
