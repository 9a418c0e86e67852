package mesh

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	libp2pwebrtc "github.com/libp2p/go-libp2p/p2p/transport/webrtc"
	libp2pwebtransport "github.com/libp2p/go-libp2p/p2p/transport/webtransport"
)

const bitswap120 = protocol.ID("/ipfs/bitswap/1.2.0")

// receiver is the page's side in the reuse tests: like @helia/bitswap, it
// closes its side of every incoming bitswap stream at once and reads
// length-prefixed messages until the stream ends; it can reset the stream
// it is reading after a message.
type receiver struct {
	mu      sync.Mutex
	streams int
	msgs    []string
	resetAt int // reset the stream after this many messages in all (0: never)
	last    network.Stream
	got     chan string
}

func (r *receiver) handle(s network.Stream) {
	r.mu.Lock()
	r.streams++
	r.last = s
	r.mu.Unlock()
	_ = s.CloseWrite()
	br := bufio.NewReader(s)
	for {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, string(b))
		reset := len(r.msgs) == r.resetAt
		r.mu.Unlock()
		r.got <- string(b)
		if reset {
			_ = s.Reset()
			return
		}
	}
}

// send does what boxo's SendMessage does: a new stream, one write of the
// length-prefixed message, then a read deadline and a close.
func send(ctx context.Context, h host.Host, p peer.ID, msg string) error {
	s, err := h.NewStream(ctx, p, bitswap120, "/ipfs/bitswap/1.1.0")
	if err != nil {
		return err
	}
	b := binary.AppendUvarint(nil, uint64(len(msg)))
	if _, err := s.Write(append(b, msg...)); err != nil {
		_ = s.Reset()
		return err
	}
	_ = s.SetReadDeadline(time.Now().Add(time.Second))
	return s.Close()
}

// reusePair starts the app's host (wrapped in a reuseHost, listening on
// listen, which needs transport) and a page-like host that dials it and
// receives bitswap messages.
func reusePair(t *testing.T, transport libp2p.Option, listen string) (*reuseHost, peer.ID, *receiver) {
	t.Helper()
	app, err := libp2p.New(libp2p.NoTransports, transport, libp2p.ListenAddrStrings(listen), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	page, r := addPage(t, app, transport)
	return newReuseHost(app), page.ID(), r
}

// addPage starts a page-like host that dials app and receives bitswap
// messages.
func addPage(t *testing.T, app host.Host, transport libp2p.Option) (host.Host, *receiver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	page, err := libp2p.New(libp2p.NoTransports, transport, libp2p.NoListenAddrs, libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { page.Close() })
	r := &receiver{got: make(chan string, 16)}
	page.SetStreamHandler(bitswap120, r.handle)
	if err := page.Connect(ctx, peer.AddrInfo{ID: app.ID(), Addrs: app.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return page, r
}

func (r *receiver) await(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-r.got:
		if got != want {
			t.Fatalf("received %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%q never arrived", want)
	}
}

// resetLast resets the stream the receiver read last, s's other end, and
// waits until s's transport has read the reset (no event tells when: it
// polls with empty writes).
func (r *receiver) resetLast(t *testing.T, s *reusedStream) {
	t.Helper()
	r.mu.Lock()
	_ = r.last.Reset()
	r.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := s.Stream.Write(nil); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the app's transport never read the receiver's reset")
		}
	}
}

func (r *receiver) streamCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.streams
}

// TestReuseHostWebRTCDirect: bitswap messages the app sends to a peer over
// WebRTC-direct, each on a "new" stream closed after it (as boxo does),
// arrive in order on one stream; after the receiver resets that stream,
// the next message opens a new one and arrives. Without reuseHost every
// message took a new stream (a new data channel).
func TestReuseHostWebRTCDirect(t *testing.T) {
	testReuseHost(t, libp2p.Transport(libp2pwebrtc.New), "/ip4/127.0.0.1/udp/0/webrtc-direct")
}

// TestReuseHostWebTransport: the same over WebTransport, where a page took
// a new QUIC stream per block (3 streams for 3 messages without reuseHost).
func TestReuseHostWebTransport(t *testing.T) {
	testReuseHost(t, libp2p.Transport(libp2pwebtransport.New), "/ip4/127.0.0.1/udp/0/quic-v1/webtransport")
}

func testReuseHost(t *testing.T, transport libp2p.Option, listen string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, page, r := reusePair(t, transport, listen)
	r.mu.Lock() // the page's handler may already be reading it
	r.resetAt = 3
	r.mu.Unlock()
	for i := range 3 {
		msg := fmt.Sprintf("block %d", i)
		if err := send(ctx, h, page, msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		r.await(t, msg)
	}
	if n := r.streamCount(); n != 1 {
		t.Errorf("3 messages took %d streams, want 1", n)
	}
	// The receiver reset the stream after the third message. Once the
	// app's transport has read the reset (no event tells when: poll), the
	// pooled stream is not handed out again, and the next message goes on
	// a new stream.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := h.take(page, []protocol.ID{bitswap120})
		if s == nil {
			break
		}
		h.put(s)
		if time.Now().After(deadline) {
			t.Fatal("the pooled stream is still handed out 10 s after the receiver reset it")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := send(ctx, h, page, "block 3"); err != nil {
		t.Fatalf("send after a reset: %v", err)
	}
	r.await(t, "block 3")
	if n := r.streamCount(); n != 2 {
		t.Errorf("after a reset: %d streams in all, want 2", n)
	}

	// A stream taken from the pool that turns out reset when bitswap
	// writes to it: the message goes on a new stream instead of being lost.
	s := h.take(page, []protocol.ID{bitswap120})
	if s == nil {
		t.Fatal("no pooled stream after block 3")
	}
	r.resetLast(t, s)
	b := binary.AppendUvarint(nil, uint64(len("block 4")))
	if _, err := s.Write(append(b, "block 4"...)); err != nil {
		t.Fatalf("write on a pooled stream the peer reset: %v", err)
	}
	r.await(t, "block 4")
	_ = s.Close()
	if n := r.streamCount(); n != 3 {
		t.Errorf("after the second reset: %d streams in all, want 3", n)
	}

	// A message whose first part went out on a pooled stream and whose
	// second part fails is not retried: its rest alone on a new stream
	// would not be a message.
	s = h.take(page, []protocol.ID{bitswap120})
	if s == nil {
		t.Fatal("no pooled stream after block 4")
	}
	if _, err := s.Write(binary.AppendUvarint(nil, uint64(len("block 5")))); err != nil {
		t.Fatalf("first part of a message on a pooled stream: %v", err)
	}
	r.resetLast(t, s)
	if _, err := s.Write([]byte("block 5")); err == nil {
		t.Error("the second part of a message cut by a reset was written somewhere")
	}
	_ = s.Close()
	if n := r.streamCount(); n != 3 {
		t.Errorf("after a message cut in two: %d streams in all, want 3 (its second part went on a new one)", n)
	}
}

// TestReuseHostOtherTransports: over TCP nothing changes, a stream per
// message, each closed (the receiver reads each to its end).
func TestReuseHostOtherTransports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, page, r := reusePair(t, libp2p.DefaultTransports, "/ip4/127.0.0.1/tcp/0")
	for i := range 3 {
		msg := fmt.Sprintf("block %d", i)
		if err := send(ctx, h, page, msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		r.await(t, msg)
	}
	if n := r.streamCount(); n != 3 {
		t.Errorf("3 messages over TCP took %d streams, want 3", n)
	}
	if len(h.idle) != 0 {
		t.Errorf("pooled streams over TCP: %v", h.idle)
	}
}

func TestIsBitswap(t *testing.T) {
	for _, tt := range []struct {
		pids []protocol.ID
		want bool
	}{
		{[]protocol.ID{bitswap120, "/ipfs/bitswap/1.1.0", "/ipfs/bitswap"}, true},
		{[]protocol.ID{bitswap120, "/ipfs/ping/1.0.0"}, false},
		{nil, false},
	} {
		if got := isBitswap(tt.pids); got != tt.want {
			t.Errorf("isBitswap(%v) = %v, want %v", tt.pids, got, tt.want)
		}
	}
}

// TestReuseHostDropsGonePeers: the streams pooled for a page that went
// away are dropped (and closed) by a later send to another page, so the
// pool does not grow with every page that leaves.
func TestReuseHostDropsGonePeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	transport := libp2p.Transport(libp2pwebrtc.New)
	h, gone, r := reusePair(t, transport, "/ip4/127.0.0.1/udp/0/webrtc-direct")
	stay, r2 := addPage(t, h.Host, transport)
	if err := send(ctx, h, gone, "to the page that leaves"); err != nil {
		t.Fatal(err)
	}
	r.await(t, "to the page that leaves")
	h.mu.Lock()
	pooled := len(h.idle[gone])
	h.mu.Unlock()
	if pooled != 1 {
		t.Fatalf("%d streams pooled for the page, want 1", pooled)
	}
	if err := h.Network().ClosePeer(gone); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.swept = time.Time{} // the next put sweeps, as it does every reuseIdle
	h.mu.Unlock()
	if err := send(ctx, h, stay.ID(), "to the page that stays"); err != nil {
		t.Fatal(err)
	}
	r2.await(t, "to the page that stays")
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.idle[gone]; ok || len(h.idle[stay.ID()]) != 1 {
		t.Errorf("pool after the page left: %v, want only the staying page's stream", h.idle)
	}
}
