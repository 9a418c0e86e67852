package fetch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio"
	mh "github.com/multiformats/go-multihash"
)

// pipeStream is a network.Stream over bytes, for the framing filter alone.
type pipeStream struct {
	network.Stream
	r     io.Reader
	reset bool
}

func (s *pipeStream) Read(p []byte) (int, error)        { return s.r.Read(p) }
func (s *pipeStream) Reset() error                      { s.reset = true; return nil }
func (s *pipeStream) Scope() network.StreamScope        { return &network.NullScope{} }
func (s *pipeStream) SetReadDeadline(_ time.Time) error { return nil }

func wantMessage(t *testing.T, n int) bsmsg.BitSwapMessage {
	t.Helper()
	m := bsmsg.New(true)
	for i := range n {
		h, _ := mh.Sum([]byte(fmt.Sprint(i)), mh.SHA2_256, -1)
		m.AddEntry(cid.NewCidV1(cid.Raw, h), int32(i), bspb.Message_Wantlist_Block, true)
	}
	return m
}

// TestInboundFilter: messages within the limits (wants, blocks, presences)
// pass through the filter byte for byte and decode as sent; a message with
// a want list over maxWantlistBytes resets the stream before it is read.
func TestInboundFilter(t *testing.T) {
	var wire bytes.Buffer
	small := wantMessage(t, 500)
	withBlock := bsmsg.New(false)
	withBlock.AddBlock(blocks.NewBlock(bytes.Repeat([]byte{7}, 1<<20)))
	withBlock.AddHave(small.Wantlist()[0].Cid)
	for _, m := range []bsmsg.BitSwapMessage{small, withBlock} {
		if err := m.ToNetV1(&wire); err != nil {
			t.Fatal(err)
		}
	}
	want := bytes.Clone(wire.Bytes())
	ps := &pipeStream{r: bytes.NewReader(wire.Bytes())}
	s := &inboundStream{Stream: ps, r: bufio.NewReaderSize(ps, 4096)}
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("filter passed %d bytes (err %v), want the %d sent unchanged", len(got), err, len(want))
	}
	rd := msgio.NewVarintReaderSize(bytes.NewReader(got), network.MessageSizeMax)
	m1, _, err := bsmsg.FromMsgReader(rd)
	if err != nil || len(m1.Wantlist()) != 500 {
		t.Fatalf("first message: %v, %d wants", err, len(m1.Wantlist()))
	}

	wire.Reset()
	if err := wantMessage(t, 5000).ToNetV1(&wire); err != nil {
		t.Fatal(err)
	}
	ps = &pipeStream{r: bytes.NewReader(wire.Bytes())}
	var rejected error
	s = &inboundStream{Stream: ps, r: bufio.NewReaderSize(ps, 4096), rejected: func(_ network.Stream, err error) { rejected = err }}
	got, err = io.ReadAll(s)
	if !errors.Is(err, errTooLarge) || !ps.reset || !errors.Is(rejected, errTooLarge) {
		t.Fatalf("a want list of 5000 entries: err %v, reset %v, rejected %v; want errTooLarge and a reset", err, ps.reset, rejected)
	}
	if len(got) > 64 {
		t.Fatalf("%d bytes of the oversized message passed, want only its headers", len(got))
	}
}
