package fetch

import (
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

func testLeaf(t *testing.T, s string) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte(s), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// TestPromises: a want-block not answered by its block within haveDeadline
// is broken only when another peer said HAVE of it and the asked peer
// delivered nothing meanwhile; three broken promises with nothing delivered
// name a liar; a broken promise voids that peer's HAVEs of the block.
func TestPromises(t *testing.T) {
	liar, seed := peer.ID("liar"), peer.ID("seed")
	c := []cid.Cid{testLeaf(t, "0"), testLeaf(t, "1"), testLeaf(t, "2"), testLeaf(t, "3")}
	t0 := time.Unix(1000, 0)
	ps := newPromises()

	// A sole provider that is slow is waited on.
	ps.asked(seed, c[0], t0)
	if b, l := ps.due(t0.Add(10*haveDeadline), time.Minute, nil); len(b)+len(l) != 0 {
		t.Fatalf("a sole slow provider was judged: %v %v", b, l)
	}
	ps.delivered(seed, c[0], t0.Add(10*haveDeadline))

	// The liar is asked for three blocks the seed also has.
	t1 := t0.Add(time.Hour)
	for _, x := range c[1:] {
		ps.have(seed, x, t1)
		ps.have(liar, x, t1)
		ps.asked(liar, x, t1)
	}
	if at, ok := ps.next(); !ok || !at.Equal(t1.Add(haveDeadline)) {
		t.Fatalf("next = %v %v, want %v", at, ok, t1.Add(haveDeadline))
	}
	if b, _ := ps.due(t1.Add(haveDeadline-time.Millisecond), time.Minute, nil); len(b) != 0 {
		t.Fatalf("broken before the deadline: %v", b)
	}
	b, liars := ps.due(t1.Add(haveDeadline), time.Minute, nil)
	if len(b) != 3 || len(liars) != 1 || liars[0] != liar {
		t.Fatalf("due = %v, %v; want 3 broken and the liar", b, liars)
	}
	if !ps.have(liar, c[1], t1.Add(haveDeadline)) {
		t.Fatal("the liar's HAVE of a block it lied about is not void")
	}
	if ps.have(seed, c[1], t1.Add(haveDeadline)) {
		t.Fatal("the seed's HAVE is void")
	}

	// A busy peer that keeps delivering is not judged.
	t2 := t1.Add(time.Hour)
	busy := peer.ID("busy")
	ps.have(seed, c[0], t2)
	ps.asked(busy, c[0], t2)
	ps.delivered(busy, c[1], t2.Add(haveDeadline-time.Millisecond))
	if b, _ := ps.due(t2.Add(haveDeadline), time.Minute, nil); len(b) != 0 {
		t.Fatalf("a busy peer was judged: %v", b)
	}
}

// TestPromisesPeerGone: what a peer was asked before its connection went
// (a seed killed or cut off) is not held against it once it is back.
func TestPromisesPeerGone(t *testing.T) {
	seed, other := peer.ID("seed"), peer.ID("other")
	c := []cid.Cid{testLeaf(t, "0"), testLeaf(t, "1"), testLeaf(t, "2")}
	t0 := time.Unix(1000, 0)
	ps := newPromises()
	for _, x := range c {
		ps.have(seed, x, t0)
		ps.have(other, x, t0)
		ps.asked(seed, x, t0)
	}
	ps.gone(seed)
	b, liars := ps.due(t0.Add(10*haveDeadline), time.Minute, nil)
	if len(b)+len(liars) != 0 {
		t.Fatalf("a peer that lost its connection broke %v, liars %v", b, liars)
	}
	if _, ok := ps.next(); ok {
		t.Fatal("promises of a gone peer are still open")
	}
}

// TestPromisesLiarPenalised: a busy seed's promise is broken because a
// liar said HAVE of the same block, voiding the seed's HAVE; once the liar
// is penalised the void is lifted, and a penalised peer's HAVE no longer
// makes another peer's promise break.
func TestPromisesLiarPenalised(t *testing.T) {
	liar, seed := peer.ID("liar"), peer.ID("seed")
	c := []cid.Cid{testLeaf(t, "0"), testLeaf(t, "1")}
	t0 := time.Unix(1000, 0)
	ps := newPromises()
	ps.have(liar, c[0], t0)
	ps.have(seed, c[0], t0)
	ps.asked(seed, c[0], t0)
	if b, _ := ps.due(t0.Add(haveDeadline), time.Minute, nil); len(b) != 1 || b[0].p != seed {
		t.Fatalf("due = %v, want the seed's promise broken (the liar said HAVE too)", b)
	}
	if !ps.have(seed, c[0], t0.Add(haveDeadline)) {
		t.Fatal("the seed's HAVE is not void after its promise broke")
	}
	if lifted := ps.penalised(liar); len(lifted) != 1 || lifted[0] != (promiseKey{seed, c[0]}) {
		t.Fatalf("penalised(liar) lifted %v, want the seed's void of %s (bitswap is to hear HAVE again)", lifted, c[0])
	}
	if ps.have(seed, c[0], t0.Add(haveDeadline)) {
		t.Fatal("the seed's HAVE is still void after the liar was penalised")
	}

	penalised := func(p peer.ID) bool { return p == liar }
	t1 := t0.Add(time.Hour)
	ps.have(liar, c[1], t1)
	ps.have(seed, c[1], t1)
	ps.asked(seed, c[1], t1)
	if b, l := ps.due(t1.Add(haveDeadline), time.Minute, penalised); len(b)+len(l) != 0 {
		t.Fatalf("due = %v, %v: a penalised peer's HAVE broke the seed's promise", b, l)
	}
}
