package fetch

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestInflow: a peer counts as sending a block for inflowRecent after its
// bytes last came; the peers remembered are bounded, those not heard from lately
// forgotten first; a nil inflow knows of nothing.
func TestInflow(t *testing.T) {
	in := newInflow()
	t0 := time.Unix(1000, 0)
	in.note("a", t0)
	if !in.recent("a", t0.Add(inflowRecent-time.Millisecond)) {
		t.Error("recent(a) = false just within inflowRecent, want true")
	}
	if in.recent("a", t0.Add(inflowRecent)) {
		t.Error("recent(a) = true at inflowRecent, want false")
	}
	if in.recent("b", t0) {
		t.Error("recent(b) = true for a peer never heard from")
	}
	for i := range maxInflowPeers - 1 {
		in.note(peer.ID(fmt.Sprint("p", i)), t0.Add(inflowRecent/2))
	}
	late := t0.Add(inflowRecent + time.Millisecond)
	in.note("new", late) // a is forgotten to make room; the others are recent
	if !in.recent("new", late) || len(in.last) != maxInflowPeers {
		t.Errorf("new peer at the bound: recent %v, %d remembered; want true, %d", in.recent("new", late), len(in.last), maxInflowPeers)
	}
	in.note("over", late) // none is old enough to forget: not noted
	if in.recent("over", late) || len(in.last) > maxInflowPeers {
		t.Errorf("a peer past the bound was noted: %d remembered", len(in.last))
	}
	var none *inflow
	none.note("a", t0)
	if none.recent("a", t0) {
		t.Error("a nil inflow knows of a peer")
	}
}

// TestReadNoting: reading a block notes its sender after each chunk that
// came; a block that breaks off before a whole chunk came is not noted.
func TestReadNoting(t *testing.T) {
	in := newInflow()
	src := bytes.Repeat([]byte{7}, 3*inflowChunk+5)
	buf := make([]byte, len(src))
	before := time.Now()
	if err := readNoting(bytes.NewReader(src), buf, in, "p"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, src) {
		t.Fatal("bytes read differ")
	}
	if at := in.last["p"]; at.Before(before) {
		t.Errorf("last note %v, before the read began", at)
	}
	if err := readNoting(bytes.NewReader(src[:10]), make([]byte, 20), in, "q"); err == nil {
		t.Error("a short block read without an error")
	}
	if _, ok := in.last["q"]; ok {
		t.Error("the sender of 10 bytes of a block was noted")
	}
}
