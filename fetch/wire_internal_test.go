package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	bsnet "github.com/ipfs/boxo/bitswap/network"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

func testBlock(t *testing.T, data []byte) blocks.Block {
	t.Helper()
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := blocks.NewBlockWithCid(data, cid.NewCidV1(cid.Raw, h))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStreamedMessageWire: a message written by streamedMessage is the
// as many bytes as boxo's own ToNetV1 writes (the same bytes, up to the
// order of map entries), and reads back (bsmsg.FromNet) to the same
// blocks, wants, presences and pending bytes.
func TestStreamedMessageWire(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 1<<20)
	b1, b2, empty := testBlock(t, big), testBlock(t, []byte("a small leaf")), testBlock(t, nil)
	want := testBlock(t, []byte("wanted"))
	for name, build := range map[string]func() bsmsg.BitSwapMessage{
		"one leaf": func() bsmsg.BitSwapMessage {
			m := bsmsg.New(false)
			m.AddBlock(b1)
			m.SetPendingBytes(3 << 20)
			return m
		},
		"leaves, wants and presences": func() bsmsg.BitSwapMessage {
			m := bsmsg.New(true)
			m.AddEntry(want.Cid(), 7, pb.Message_Wantlist_Block, true)
			m.Cancel(b2.Cid())
			m.AddBlock(b1)
			m.AddBlock(b2)
			m.AddBlock(empty)
			m.AddHave(testBlock(t, []byte("have")).Cid())
			m.AddDontHave(testBlock(t, []byte("dont")).Cid())
			return m
		},
		"no blocks": func() bsmsg.BitSwapMessage {
			m := bsmsg.New(false)
			m.AddHave(want.Cid())
			return m
		},
	} {
		m := build()
		var boxo, ours bytes.Buffer
		if err := m.ToNetV1(&boxo); err != nil {
			t.Fatal(err)
		}
		if err := streamed(m).ToNetV1(&ours); err != nil {
			t.Fatal(err)
		}
		if boxo.Len() != ours.Len() {
			t.Errorf("%s: %d bytes written, boxo writes %d", name, ours.Len(), boxo.Len())
		}
		got, _, err := bsmsg.FromNet(&ours)
		if err != nil {
			t.Fatalf("%s: read back: %v", name, err)
		}
		if a, b := describe(got), describe(m); a != b {
			t.Errorf("%s: read back\n%s\nsent\n%s", name, a, b)
		}
	}
}

// TestStreamedMessageNoCopy: writing a message with a 1 MiB leaf allocates
// a few hundred bytes, not a buffer for the message (boxo's ToNetV1 takes
// 2 MiB from its pool for it, held while the peer reads).
func TestStreamedMessageNoCopy(t *testing.T) {
	m := bsmsg.New(false)
	m.AddBlock(testBlock(t, bytes.Repeat([]byte{1}, 1<<20)))
	m.SetPendingBytes(1 << 20)
	s := streamed(m)
	var w countWriter
	var before, after runtime.MemStats
	runtime.GC() // twice: buffers pooled by earlier writes are gone
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := s.ToNetV1(&w); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Errorf("a send of a 1 MiB leaf allocated %d bytes, want under 64 KiB", n)
	}
	if w.n < 1<<20 {
		t.Errorf("wrote %d bytes, want at least 1 MiB", w.n)
	}
}

// describe lists a message's contents in a fixed order, block data by
// hash.
func describe(m bsmsg.BitSwapMessage) string {
	var lines []string
	for _, e := range m.Wantlist() {
		lines = append(lines, fmt.Sprintf("want %s %d %v %v %v", e.Cid, e.Priority, e.Cancel, e.WantType, e.SendDontHave))
	}
	for _, b := range m.Blocks() {
		lines = append(lines, fmt.Sprintf("block %s %x", b.Cid(), sha256.Sum256(b.RawData())))
	}
	for _, p := range m.BlockPresences() {
		lines = append(lines, fmt.Sprintf("presence %s %v", p.Cid, p.Type))
	}
	slices.Sort(lines)
	return fmt.Sprintf("full %v pending %d\n%s", m.Full(), m.PendingBytes(), strings.Join(lines, "\n"))
}

type countWriter struct{ n int }

func (w *countWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// recordingNet is a bitswap network that records the messages sent.
type recordingNet struct {
	bsnet.BitSwapNetwork
	sent []bsmsg.BitSwapMessage
}

func (n *recordingNet) SendMessage(_ context.Context, _ peer.ID, m bsmsg.BitSwapMessage) error {
	n.sent = append(n.sent, m)
	return nil
}

// TestGuardSendsStreamed: what bitswap's server sends through the guard
// (blocks) reaches the network as a streamedMessage.
func TestGuardSendsStreamed(t *testing.T) {
	net := &recordingNet{}
	f := &Fetcher{cfg: Config{Penalty: DefaultPenalty}, log: slog.New(slog.DiscardHandler)}
	g := newGuard(net, f)
	m := bsmsg.New(false)
	m.AddBlock(testBlock(t, []byte("leaf")))
	if err := g.SendMessage(context.Background(), peer.ID("p"), m); err != nil {
		t.Fatal(err)
	}
	if len(net.sent) != 1 {
		t.Fatalf("%d messages sent, want 1", len(net.sent))
	}
	if _, ok := net.sent[0].(streamedMessage); !ok {
		t.Errorf("the network got a %T, want a streamedMessage", net.sent[0])
	}
}

// droppingNet is a bitswap network on which the peer's connection goes as
// each message is sent (the peer read it and went), or the send fails.
type droppingNet struct {
	bsnet.BitSwapNetwork
	g    *guard
	fail bool
}

func (n *droppingNet) SendMessage(_ context.Context, p peer.ID, _ bsmsg.BitSwapMessage) error {
	if n.fail {
		return errors.New("stream reset")
	}
	guardReceiver{n.g}.PeerDisconnected(p)
	return nil
}

// TestGuardOwedGoesWithConnection: a want that asks for an answer and
// whose peer's connection goes while it is sent is not owed afterwards (it
// went with the connection: the peer, reconnected, is not penalised as
// silent for it); one that fails to go out is not owed either; one sent
// on a connection that stays is.
func TestGuardOwedGoesWithConnection(t *testing.T) {
	f := &Fetcher{cfg: Config{Penalty: DefaultPenalty}, log: slog.New(slog.DiscardHandler)}
	net := &droppingNet{}
	g := newGuard(net, f)
	net.g = g
	p := peer.ID("p")
	want := func() bsmsg.BitSwapMessage {
		m := bsmsg.New(false)
		m.AddEntry(testBlock(t, []byte("leaf")).Cid(), 1, pb.Message_Wantlist_Block, true)
		return m
	}
	if err := g.SendMessage(context.Background(), p, want()); err != nil {
		t.Fatal(err)
	}
	if g.owesAnswer(p, time.Now()) {
		t.Error("a want whose connection went while it was sent is still owed")
	}
	net.fail = true
	q := peer.ID("q")
	if err := g.SendMessage(context.Background(), q, want()); err == nil {
		t.Fatal("the failing send succeeded")
	}
	if g.owesAnswer(q, time.Now()) {
		t.Error("a want that failed to go out is owed")
	}
	g.BitSwapNetwork = &recordingNet{}
	if err := g.SendMessage(context.Background(), p, want()); err != nil {
		t.Fatal(err)
	}
	if !g.owesAnswer(p, time.Now()) {
		t.Error("a want sent on a connection that stayed is not owed")
	}
}
