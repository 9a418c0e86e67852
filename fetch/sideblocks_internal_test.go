package fetch

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
)

// TestInboundSideBlocks: with a side table, the inbound filter hands boxo
// each message without its blocks (a few hundred bytes where the message
// was 1 or 2 MiB: what boxo allocates to read it), and the guard's
// withSideBlocks puts them back: the message bitswap sees is the one sent.
// Blocks of a message boxo read but did not hand on are let go of when it
// reads the next message, and when the stream is reset.
func TestInboundSideBlocks(t *testing.T) {
	leaf, small := testBlock(t, bytes.Repeat([]byte{3}, 1<<20)), testBlock(t, []byte("small"))
	wants := wantMessage(t, 20)
	one := bsmsg.New(false)
	one.AddBlock(leaf)
	one.AddHave(wants.Wantlist()[0].Cid)
	one.SetPendingBytes(5 << 20)
	two := bsmsg.New(false)
	two.AddBlock(testBlock(t, bytes.Repeat([]byte{4}, 1<<20)))
	two.AddBlock(small)
	two.AddEntry(wants.Wantlist()[1].Cid, 9, pb.Message_Wantlist_Have, false)
	sent := []bsmsg.BitSwapMessage{wants, one, two, one}
	var wire bytes.Buffer
	for _, m := range sent {
		if err := m.ToNetV1(&wire); err != nil {
			t.Fatal(err)
		}
	}
	side := newSideBlocks()
	ps := &pipeStream{r: bytes.NewReader(wire.Bytes())}
	s := &inboundStream{Stream: ps, r: bufio.NewReaderSize(ps, 4096), side: side}
	rd := msgio.NewVarintReaderSize(s, network.MessageSizeMax) // as boxo reads
	for k, m := range sent {
		got, size, err := bsmsg.FromMsgReader(rd)
		if err != nil {
			t.Fatalf("message %d: %v", k, err)
		}
		if len(m.Blocks()) > 0 && size > 1024 {
			t.Errorf("message %d: boxo read %d bytes, want the message without its blocks (under 1 KiB)", k, size)
		}
		if k == 3 {
			// boxo drops this one: its blocks go when the stream is reset.
			if held, _ := side.counts(); held != 1 {
				t.Fatalf("%d messages' blocks held before the reset, want 1", held)
			}
			_ = s.Reset()
			break
		}
		if a, b := describe(withSideBlocks(side, got)), describe(m); a != b {
			t.Errorf("message %d: bitswap gets\n%s\nsent\n%s", k, a, b)
		}
	}
	if held, taken := side.counts(); held != 0 || taken != 3 {
		t.Errorf("side table: %d messages' blocks held, %d taken out; want 0 and 3", held, taken)
	}

	// A message boxo reads and drops: its blocks go when it reads the next.
	wire.Reset()
	for _, m := range []bsmsg.BitSwapMessage{one, wants} {
		if err := m.ToNetV1(&wire); err != nil {
			t.Fatal(err)
		}
	}
	side = newSideBlocks()
	ps = &pipeStream{r: bytes.NewReader(wire.Bytes())}
	rd = msgio.NewVarintReaderSize(&inboundStream{Stream: ps, r: bufio.NewReaderSize(ps, 4096), side: side}, network.MessageSizeMax)
	if _, _, err := bsmsg.FromMsgReader(rd); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bsmsg.FromMsgReader(rd); err != nil {
		t.Fatal(err)
	}
	if held, _ := side.counts(); held != 0 {
		t.Errorf("%d messages' blocks held after boxo read on, want 0", held)
	}
	if _, _, err := bsmsg.FromMsgReader(rd); err != io.EOF {
		t.Errorf("after the last message: %v, want EOF", err)
	}
}

// TestInboundSideBlocksMalformed: a block whose prefix does not decode is
// a malformed message: the stream is reset and nothing is held.
func TestInboundSideBlocksMalformed(t *testing.T) {
	var wire bytes.Buffer
	m := bsmsg.New(false)
	m.AddBlock(testBlock(t, []byte("leaf")))
	if err := streamed(m).ToNetV1(&wire); err != nil {
		t.Fatal(err)
	}
	b := wire.Bytes()
	i := bytes.Index(b, cid.NewCidV1(cid.Raw, m.Blocks()[0].Cid().Hash()).Prefix().Bytes())
	if i < 0 {
		t.Fatal("prefix not found on the wire")
	}
	b[i] = 0x7f // CID version 127
	side := newSideBlocks()
	ps := &pipeStream{r: bytes.NewReader(b)}
	s := &inboundStream{Stream: ps, r: bufio.NewReaderSize(ps, 4096), side: side}
	if _, err := io.ReadAll(s); err == nil || !ps.reset {
		t.Errorf("malformed block: err %v, reset %v; want an error and a reset", err, ps.reset)
	}
	if held, _ := side.counts(); held != 0 {
		t.Errorf("%d messages' blocks held, want 0", held)
	}
}

// TestFetcherTakesBlocksAside: a Fetcher's bitswap network reads blocks
// aside (New wires the side table into both the inbound filter and the
// guard): a block another peer sends on a raw bitswap stream reaches the
// guard as sent, and went through the side table.
func TestFetcherTakesBlocksAside(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, sender := loopHost(t), loopHost(t)
	f := newMemFetcher(t, h)
	defer f.Close()
	leaf := testBlock(t, bytes.Repeat([]byte{5}, 1<<20))
	f.guard.want([]cid.Cid{leaf.Cid()})
	if err := sender.Connect(ctx, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	m := bsmsg.New(false)
	m.AddBlock(leaf)
	s, err := sender.NewStream(ctx, h.ID(), "/ipfs/bitswap/1.2.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ToNetV1(s); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	for f.guard.senderOf(leaf.Cid()) != sender.ID() {
		if ctx.Err() != nil {
			t.Fatal("the block never reached the guard")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if held, taken := f.guard.side.counts(); held != 0 || taken != 1 {
		t.Errorf("side table: %d held, %d taken out; want 0 and 1", held, taken)
	}
}

// countingScope is a stream scope that counts the memory reserved.
type countingScope struct {
	network.NullScope
	reserved int
}

func (s *countingScope) ReserveMemory(n int, _ uint8) error { s.reserved += n; return nil }
func (s *countingScope) ReleaseMemory(n int)                { s.reserved -= n }

type scopedPipe struct {
	pipeStream
	scope *countingScope
}

func (s *scopedPipe) Scope() network.StreamScope { return s.scope }

// TestInboundReservesUntilHandedOn: a message's size stays reserved with
// the stream's scope until boxo has read all of it (when it holds its own
// copy), and is released then.
func TestInboundReservesUntilHandedOn(t *testing.T) {
	var wire bytes.Buffer
	if err := wantMessage(t, 300).ToNetV1(&wire); err != nil {
		t.Fatal(err)
	}
	total := wire.Len()
	ps := &scopedPipe{pipeStream: pipeStream{r: bytes.NewReader(wire.Bytes())}, scope: &countingScope{}}
	s := &inboundStream{Stream: ps, r: bufio.NewReaderSize(ps, 4096)}
	buf := make([]byte, 100)
	n, err := s.Read(buf)
	if err != nil || n == 0 {
		t.Fatal(n, err)
	}
	if ps.scope.reserved == 0 {
		t.Fatal("nothing reserved while the message is handed on")
	}
	got := n
	for got < total {
		n, err := s.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got += n
		if got < total && ps.scope.reserved == 0 {
			t.Fatalf("reservation released with %d of %d bytes handed on", got, total)
		}
	}
	if ps.scope.reserved != 0 {
		t.Errorf("%d bytes still reserved after the message was handed on", ps.scope.reserved)
	}
}

// FuzzInboundSideBlocks: whatever a peer sends, the inbound filter with a
// side table neither panics nor keeps blocks once the stream has ended,
// and what boxo decodes from it, with its blocks put back, decodes.
func FuzzInboundSideBlocks(f *testing.F) {
	leaf := blocks.NewBlock(bytes.Repeat([]byte{9}, 300))
	for _, build := range []func() bsmsg.BitSwapMessage{
		func() bsmsg.BitSwapMessage {
			m := bsmsg.New(false)
			m.AddBlock(leaf)
			m.AddHave(leaf.Cid())
			m.SetPendingBytes(7)
			return m
		},
		func() bsmsg.BitSwapMessage {
			m := bsmsg.New(true)
			m.AddEntry(leaf.Cid(), 3, pb.Message_Wantlist_Have, true)
			m.AddDontHave(markerCid("forged"))
			return m
		},
	} {
		var wire bytes.Buffer
		if err := build().ToNetV1(&wire); err != nil {
			f.Fatal(err)
		}
		f.Add(wire.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		side := newSideBlocks()
		ps := &pipeStream{r: bytes.NewReader(data)}
		s := &inboundStream{Stream: ps, r: bufio.NewReaderSize(ps, 4096), side: side}
		rd := msgio.NewVarintReaderSize(s, network.MessageSizeMax)
		for {
			m, _, err := bsmsg.FromMsgReader(rd)
			if err != nil {
				_ = s.Reset() // as boxo does on an error
				break
			}
			for _, bp := range withSideBlocks(side, m).BlockPresences() {
				if _, ok := markerToken(bp.Cid); ok {
					t.Fatalf("a marker reached bitswap: %s", bp.Cid)
				}
			}
		}
		if held, _ := side.counts(); held != 0 {
			t.Fatalf("%d messages' blocks held after the stream ended", held)
		}
	})
}
