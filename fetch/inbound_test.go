package fetch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
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
// a want list over maxWantlistBytes resets the stream before any of it,
// not even its length, is handed to boxo (which allocates the whole
// message when it reads the length: 2 MiB for each want list of an attack).
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
	if len(got) != 0 {
		t.Fatalf("%d bytes of the oversized message passed, want none", len(got))
	}
}

// fullScope is a stream scope with no memory left to reserve.
type fullScope struct{ *network.NullScope }

func (fullScope) ReserveMemory(int, uint8) error { return network.ErrResourceLimitExceeded }

// fullStream is a pipeStream whose scope has no memory left.
type fullStream struct{ *pipeStream }

func (fullStream) Scope() network.StreamScope { return fullScope{&network.NullScope{}} }

// TestInboundNoMemoryNotRefused: a message that the resource manager has
// no memory for (the node's or the peer's limits full, as when idle peers
// hold their streams' windows) resets its stream, and its peer, not at
// fault, is not refused. It was taken for a message over the limits, and
// an honest seed sending blocks was refused for a minute.
func TestInboundNoMemoryNotRefused(t *testing.T) {
	var wire bytes.Buffer
	withBlock := bsmsg.New(false)
	withBlock.AddBlock(blocks.NewBlock(bytes.Repeat([]byte{7}, 1<<20)))
	if err := withBlock.ToNetV1(&wire); err != nil {
		t.Fatal(err)
	}
	ps := &pipeStream{r: bytes.NewReader(wire.Bytes())}
	var rejected error
	s := &inboundStream{Stream: fullStream{ps}, r: bufio.NewReaderSize(ps, 4096), rejected: func(_ network.Stream, err error) { rejected = err }}
	got, err := io.ReadAll(s)
	if !errors.Is(err, errNoMemory) || errors.Is(err, errTooLarge) || !ps.reset || rejected != nil {
		t.Fatalf("a block with no memory for it: err %v, reset %v, rejected %v; want errNoMemory, a reset and no refusal", err, ps.reset, rejected)
	}
	if len(got) != 0 {
		t.Fatalf("%d bytes of the message passed, want none", len(got))
	}
}

// loopHost starts a libp2p host on loopback TCP.
func loopHost(t *testing.T, opts ...libp2p.Option) host.Host {
	t.Helper()
	h, err := libp2p.New(append([]libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(),
		libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// writeWants opens a bitswap stream from h to p and writes m on it.
func writeWants(ctx context.Context, h host.Host, p peer.ID, m bsmsg.BitSwapMessage) (network.Stream, error) {
	s, err := h.NewStream(ctx, p, "/ipfs/bitswap/1.2.0")
	if err != nil {
		return nil, err
	}
	var wire bytes.Buffer
	if err := m.ToNetV1(&wire); err != nil {
		return nil, err
	}
	_, err = s.Write(wire.Bytes())
	return s, err
}

// TestInboundRefusesPeer: a peer that sends a want list over the limits
// loses its connection at once, and for refuseFor its bitswap streams are
// reset before the handler sees them, however small what it sends; another
// peer's messages go on reaching the handler.
func TestInboundRefusesPeer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed, bad, good := loopHost(t), loopHost(t), loopHost(t)
	var rejected atomic.Int64
	fh := filterHost{Host: seed, gate: new(Gater), rejected: func(network.Stream, error) { rejected.Add(1) }}
	msgs := recordMessages(fh)
	for _, h := range []host.Host{bad, good} {
		if err := h.Connect(ctx, peer.AddrInfo{ID: seed.ID(), Addrs: seed.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := writeWants(ctx, good, seed.ID(), wantMessage(t, 10)); err != nil {
		t.Fatal(err)
	}
	if p := <-msgs; p != good.ID() {
		t.Fatalf("message from %s, want the good peer's", p)
	}

	sendOversize(ctx, t, bad, seed)
	if rejected.Load() != 1 {
		t.Fatalf("%d refusals reported, want 1", rejected.Load())
	}
	// Back with a small want list: reset unread, disconnected again. The
	// seed resets the stream and closes the connection at once, so the
	// peer sees either the reset or the connection's end (EOF on TCP when
	// the close wins the race); what matters is that the seed read none
	// of it and the peer is cut off again.
	s, err := writeWants(ctx, bad, seed.ID(), wantMessage(t, 10))
	if err == nil {
		_, err = s.Read(make([]byte, 1))
	}
	if err == nil {
		t.Fatal("a refused peer's new stream was answered")
	}
	for seed.Network().Connectedness(bad.ID()) == network.Connected {
		if ctx.Err() != nil {
			t.Fatal("the refused peer is still connected after its new stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := writeWants(ctx, good, seed.ID(), wantMessage(t, 10)); err != nil {
		t.Fatal(err)
	}
	if p := <-msgs; p != good.ID() {
		t.Fatalf("message from %s (the refused peer), want the good peer's", p)
	}
	if rejected.Load() != 1 {
		t.Fatalf("%d refusals reported, want still 1 (a refused peer's stream is reset unread)", rejected.Load())
	}
	if !fh.refused(bad.ID(), time.Now()) || fh.refused(bad.ID(), time.Now().Add(refuseFor)) || fh.refused(good.ID(), time.Now()) {
		t.Fatalf("refused: bad now %v, bad after refuseFor %v, good %v; want true, false, false",
			fh.refused(bad.ID(), time.Now()), fh.refused(bad.ID(), time.Now().Add(refuseFor)), fh.refused(good.ID(), time.Now()))
	}
}

// TestInboundRefusedCannotReconnect: a peer refused for a want list over
// the limits cannot connect again while it is refused, when the Gater is
// the host's connection gater too: it could redial at once and have the
// seed take in its next message's first window each time (loopback is
// exempt from go-libp2p's connection rate limit). Another peer connects
// and is heard; the seed does not dial the refused peer either; once the
// refusal ends, the peer connects again.
func TestInboundRefusedCannotReconnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gate := new(Gater)
	seed := loopHost(t, libp2p.ConnectionGater(gate))
	bad, good := loopHost(t), loopHost(t)
	msgs := recordMessages(filterHost{Host: seed, gate: gate})
	seedInfo := peer.AddrInfo{ID: seed.ID(), Addrs: seed.Addrs()}
	if err := bad.Connect(ctx, seedInfo); err != nil {
		t.Fatal(err)
	}
	sendOversize(ctx, t, bad, seed)
	// Each connection the seed takes from the refused peer from now on.
	var conns atomic.Int64
	seed.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == bad.ID() {
			conns.Add(1)
		}
	}})
	for i := range 3 {
		// The seed refuses the connection after its security handshake,
		// which on TCP ends the dialler's side too: Connect may succeed
		// there. A stream on it cannot open, or is reset unread.
		_ = bad.Connect(network.WithForceDirectDial(ctx, "redial"), seedInfo)
		if s, err := writeWants(ctx, bad, seed.ID(), wantMessage(t, 10)); err == nil {
			if _, err := s.Read(make([]byte, 1)); err == nil {
				t.Fatalf("redial %d: the refused peer's stream was answered", i)
			}
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the seed took %d connections of the refused peer, want none", n)
	}
	if err := seed.Connect(ctx, peer.AddrInfo{ID: bad.ID(), Addrs: bad.Addrs()}); err == nil {
		t.Fatal("the seed dialled the refused peer")
	}
	if err := good.Connect(ctx, seedInfo); err != nil {
		t.Fatal(err)
	}
	if _, err := writeWants(ctx, good, seed.ID(), wantMessage(t, 10)); err != nil {
		t.Fatal(err)
	}
	if p := <-msgs; p != good.ID() {
		t.Fatalf("message from %s, want the good peer's", p)
	}
	gate.refuse(bad.ID(), time.Now()) // the minute is up
	if _, err := writeWants(network.WithForceDirectDial(ctx, "refusal over"), bad, seed.ID(), wantMessage(t, 10)); err != nil {
		t.Fatalf("the peer cannot open a stream after its refusal ended: %v", err)
	}
	if p := <-msgs; p != bad.ID() || conns.Load() != 1 {
		t.Fatalf("after the refusal: message from %s, %d connections; want the peer's, over one", p, conns.Load())
	}
}

// timeoutReader fails each read with a timeout, as a stream past its read
// deadline does.
type timeoutReader struct{}

func (timeoutReader) Read([]byte) (int, error) { return 0, os.ErrDeadlineExceeded }

// TestInboundSilentStream: a new stream that brings no message before its
// first deadline fails with errSilent, is reset and its peer refused; one
// that timed out after a message (an idle want stream) only ends.
func TestInboundSilentStream(t *testing.T) {
	ps := &pipeStream{r: timeoutReader{}}
	var rejected error
	s := &inboundStream{Stream: ps, r: bufio.NewReaderSize(ps, 4096), rejected: func(_ network.Stream, err error) { rejected = err }}
	if _, err := s.Read(make([]byte, 16)); !errors.Is(err, errSilent) || !ps.reset || !errors.Is(rejected, errSilent) {
		t.Fatalf("a silent new stream: err %v, reset %v, rejected %v; want errSilent, a reset and the peer refused", err, ps.reset, rejected)
	}

	var wire bytes.Buffer
	if err := wantMessage(t, 3).ToNetV1(&wire); err != nil {
		t.Fatal(err)
	}
	ps = &pipeStream{r: io.MultiReader(&wire, timeoutReader{})}
	rejected = nil
	s = &inboundStream{Stream: ps, r: bufio.NewReaderSize(ps, 4096), rejected: func(_ network.Stream, err error) { rejected = err }}
	_, err := io.ReadAll(s)
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, errSilent) || ps.reset || rejected != nil {
		t.Fatalf("an idle stream after a message: err %v, reset %v, rejected %v; want the timeout alone", err, ps.reset, rejected)
	}
}

// connOf is a network.Conn that knows only its remote peer.
type connOf struct {
	network.Conn
	p peer.ID
}

func (c connOf) RemotePeer() peer.ID { return c.p }

// streamOf is a network.Stream of a connection to p.
type streamOf struct {
	network.Stream
	p peer.ID
}

func (s streamOf) Conn() network.Conn { return connOf{p: s.p} }

// TestInboundSilentStrikes: a peer's silent streams are reset alone up to
// silentStrikes-1 within refuseFor; the silentStrikes-th refuses the peer.
// A want list over the limits refuses at once.
func TestInboundSilentStrikes(t *testing.T) {
	seed := loopHost(t)
	fh := filterHost{Host: seed, gate: new(Gater)}
	quiet, big := peer.ID("quiet"), peer.ID("big")
	for i := range silentStrikes {
		if fh.refused(quiet, time.Now()) {
			t.Fatalf("refused after %d silent streams, want after %d", i, silentStrikes)
		}
		fh.refuse(streamOf{p: quiet}, errSilent)
	}
	if !fh.refused(quiet, time.Now()) {
		t.Fatalf("not refused after %d silent streams", silentStrikes)
	}
	fh.refuse(streamOf{p: big}, errTooLarge)
	if !fh.refused(big, time.Now()) {
		t.Fatal("not refused after a want list over the limits")
	}
	c := &silentCount{}
	now := time.Now()
	for range silentStrikes - 1 {
		c.add(now)
	}
	if c.add(now.Add(refuseFor + time.Second)) {
		t.Fatal("silent streams further apart than refuseFor counted together")
	}
}

// sendOversize sends seed a want list of 5000 entries from bad and waits
// until seed has cut bad off.
func sendOversize(ctx context.Context, t *testing.T, bad, seed host.Host) {
	t.Helper()
	s, _ := writeWants(ctx, bad, seed.ID(), wantMessage(t, 5000))
	if s != nil {
		_, _ = io.Copy(io.Discard, s) // until the reset
	}
	for seed.Network().Connectedness(bad.ID()) == network.Connected {
		if ctx.Err() != nil {
			t.Fatal("the peer that sent 5000 wants is still connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recordMessages sets fh's bitswap handler to one that reads each stream's
// messages and sends the sender of each on the channel it returns.
func recordMessages(fh filterHost) <-chan peer.ID {
	msgs := make(chan peer.ID, 16)
	fh.SetStreamHandler("/ipfs/bitswap/1.2.0", func(s network.Stream) {
		defer s.Close()
		rd := msgio.NewVarintReaderSize(s, network.MessageSizeMax)
		for {
			if _, _, err := bsmsg.FromMsgReader(rd); err != nil {
				return
			}
			msgs <- s.Conn().RemotePeer()
		}
	})
	return msgs
}
