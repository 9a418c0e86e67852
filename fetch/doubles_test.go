package fetch_test

import (
	"context"
	"io"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	blocks "github.com/ipfs/go-block-format"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msgio "github.com/libp2p/go-msgio"
)

// bitswapProtocols are the protocol IDs boxo's bitswap speaks.
var bitswapProtocols = []protocol.ID{"/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0", "/ipfs/bitswap"}

// silentPeer is a host that accepts bitswap streams and never answers.
func silentPeer(t testing.TB) host.Host {
	t.Helper()
	h := newHost(t)
	for _, p := range bitswapProtocols {
		h.SetStreamHandler(p, func(s network.Stream) {
			io.Copy(io.Discard, s)
			s.Reset()
		})
	}
	return h
}

// lyingPeer is a host speaking the real bitswap protocol that answers
// every want (want-have or want-block) with the wanted block's bytes
// corrupted: one bit flipped, sent under the wanted CID's prefix.
func lyingPeer(t testing.TB, data func(c blocks.Block) []byte, lookup func(k string) []byte) host.Host {
	t.Helper()
	h := newHost(t)
	for _, p := range bitswapProtocols {
		h.SetStreamHandler(p, func(s network.Stream) {
			defer s.Reset()
			from := s.Conn().RemotePeer()
			r := msgio.NewVarintReaderSize(s, network.MessageSizeMax)
			for {
				m, _, err := bsmsg.FromMsgReader(r)
				if err != nil {
					return
				}
				reply := bsmsg.New(false)
				for _, e := range m.Wantlist() {
					if e.Cancel {
						continue
					}
					good := lookup(e.Cid.KeyString())
					if good == nil {
						continue
					}
					bad := append([]byte(nil), good...)
					bad[len(bad)/2] ^= 1
					b, _ := blocks.NewBlockWithCid(bad, e.Cid) // unchecked: that is the lie
					reply.AddBlock(b)
				}
				if reply.Empty() {
					continue
				}
				send(h, from, reply)
			}
		})
	}
	return h
}

// onMessages makes h take bitswap messages, handing each to each as it
// is read.
func onMessages(h host.Host, each func(bsmsg.BitSwapMessage)) {
	for _, p := range bitswapProtocols {
		h.SetStreamHandler(p, func(s network.Stream) {
			defer s.Reset()
			r := msgio.NewVarintReaderSize(s, network.MessageSizeMax)
			for {
				m, _, err := bsmsg.FromMsgReader(r)
				if err != nil {
					return
				}
				each(m)
			}
		})
	}
}

// send writes one bitswap message to p on a new stream, as bitswap does.
func send(h host.Host, p peer.ID, m bsmsg.BitSwapMessage) {
	s, err := h.NewStream(context.Background(), p, bitswapProtocols[0])
	if err != nil {
		return
	}
	defer s.Close()
	m.ToNetV1(s)
}

// sendSlowly writes one bitswap message to p on a new stream at about
// rate bytes a second, in 16 KiB writes: a holder sending at its serving
// cap.
func sendSlowly(h host.Host, p peer.ID, m bsmsg.BitSwapMessage, rate int) {
	s, err := h.NewStream(context.Background(), p, bitswapProtocols[0])
	if err != nil {
		return
	}
	defer s.Close()
	m.ToNetV1(&slowWriter{w: s, rate: rate})
}

// slowWriter writes to w at about rate bytes a second.
type slowWriter struct {
	w    io.Writer
	rate int
}

func (sw *slowWriter) Write(b []byte) (int, error) {
	const piece = 16 << 10
	n := 0
	for len(b) > 0 {
		k := min(len(b), piece)
		time.Sleep(time.Duration(k) * time.Second / time.Duration(sw.rate))
		m, err := sw.w.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}
