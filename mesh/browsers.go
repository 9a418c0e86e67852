package mesh

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// withBrowserAddrs returns addrs followed by a WebRTC-direct and a
// WebTransport listen address (UDP, port chosen by the system) for every IP
// address of addrs that has no address of that transport yet: what
// Config.BrowserTransports adds. Addresses that do not parse or do not start
// with /ip4 or /ip6 are passed through untouched (validate reports the
// former). The result never shares addrs's backing array.
func withBrowserAddrs(addrs []string) []string {
	out := append([]string(nil), addrs...)
	type ip struct{ proto, value string }
	var order []ip
	has := map[ip]*[2]bool{} // WebRTC-direct, WebTransport
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil || len(a) == 0 {
			continue
		}
		first := a[0]
		if c := first.Protocol().Code; c != ma.P_IP4 && c != ma.P_IP6 {
			continue
		}
		k := ip{first.Protocol().Name, first.Value()}
		if has[k] == nil {
			has[k] = new([2]bool)
			order = append(order, k)
		}
		if _, err := a.ValueForProtocol(ma.P_WEBRTC_DIRECT); err == nil {
			has[k][0] = true
		}
		if _, err := a.ValueForProtocol(ma.P_WEBTRANSPORT); err == nil {
			has[k][1] = true
		}
	}
	for _, k := range order {
		base := "/" + k.proto + "/" + k.value + "/udp/0"
		if !has[k][0] {
			out = append(out, base+"/webrtc-direct")
		}
		if !has[k][1] {
			out = append(out, base+"/quic-v1/webtransport")
		}
	}
	return out
}

// summaryHost is the host the summary service answers from: the same host,
// but a holder's addresses come out of its peerstore in summaryOrder, so
// that the eight an answer carries (announce.MaxHolderAddrs) are ones the
// asker can use. Unordered, they came in the peerstore's map order: a
// desktop app listening on TCP, QUIC, WebTransport and WebRTC-direct on
// loopback, one IPv4 and one IPv6 address has 16, and its LAN WebRTC-direct
// address was often left out of the answer a browser page asks for.
func summaryHost(h host.Host) host.Host {
	return orderedHost{Host: h, ps: orderedPeerstore{Peerstore: h.Peerstore()}}
}

type orderedHost struct {
	host.Host
	ps orderedPeerstore
}

func (h orderedHost) Peerstore() peerstore.Peerstore { return h.ps }

type orderedPeerstore struct{ peerstore.Peerstore }

func (ps orderedPeerstore) Addrs(p peer.ID) []ma.Multiaddr {
	return summaryOrder(ps.Peerstore.Addrs(p))
}

// summaryOrder sorts addrs, in place, for a summary answer: addresses other
// peers can reach (not loopback, not link-local) first; then one transport
// after another, WebRTC-direct, WebTransport, QUIC, TCP, the rest, so that
// browsers on the holder's LAN and native peers each find theirs in the
// first eight. Equal ones keep their order.
func summaryOrder(addrs []ma.Multiaddr) []ma.Multiaddr {
	rank := func(a ma.Multiaddr) int {
		r := 4
		switch {
		case hasProtocol(a, ma.P_WEBRTC_DIRECT):
			r = 0
		case hasProtocol(a, ma.P_WEBTRANSPORT):
			r = 1
		case hasProtocol(a, ma.P_QUIC_V1):
			r = 2
		case hasProtocol(a, ma.P_TCP):
			r = 3
		}
		if manet.IsIPLoopback(a) || manet.IsIP6LinkLocal(a) {
			r += 10
		}
		return r
	}
	slices.SortStableFunc(addrs, func(a, b ma.Multiaddr) int { return rank(a) - rank(b) })
	return addrs
}

func hasProtocol(a ma.Multiaddr, code int) bool {
	_, err := a.ValueForProtocol(code)
	return err == nil
}

// reuseIdle is how long a bitswap stream to a browser may sit idle in
// reuseHost's pool before a send opens a new one instead: @helia/bitswap
// aborts an incoming stream silent for 10 s (messageReceiveTimeout).
const reuseIdle = 5 * time.Second

// reusedOver are the transports (network.ConnectionState.Transport) over
// which reuseHost pools bitswap streams: the browsers'.
var reusedOver = map[string]bool{"webrtc-direct": true, "webtransport": true}

// reuseMax is how many idle streams reuseHost keeps per peer.
const reuseMax = 4

// reuseHost is the host bitswap gets (fetch.Config.Host): it keeps the
// streams bitswap opens to a peer over a browser transport (WebRTC-direct
// or WebTransport: in practice a browser page on the LAN) open after
// bitswap closes them, and hands them out again for the next message to
// that peer. boxo opens a stream per message it sends; over WebRTC-direct
// a stream is a new data channel, which a page took 5-8 ms more to accept
// than a message on an open one (a Go-to-page libp2p ping on a new stream
// took 5-8 ms, page-to-Go 1-2 ms), on top of multistream negotiation, for
// every block it was sent; over WebTransport a page's first byte of a 100
// KiB block came in 7-8 ms on a reused stream against 9-12 ms on new
// ones. Bitswap messages are length-prefixed, and every implementation
// reads messages until the stream ends (boxo, Helia, Kubo), so several
// messages on one stream are what bitswap's own want streams already do.
// Streams over other transports (between native peers), and every other
// protocol, are left as they are. Safe for concurrent use.
type reuseHost struct {
	host.Host
	mu    sync.Mutex
	idle  map[peer.ID][]*reusedStream
	swept time.Time // when put last dropped every peer's expired streams
}

func newReuseHost(h host.Host) *reuseHost {
	return &reuseHost{Host: h, idle: make(map[peer.ID][]*reusedStream)}
}

// NewStream returns an idle pooled stream to p for a bitswap protocol if
// there is one, else a new stream, pooled once bitswap closes it if it runs
// over a browser transport.
func (h *reuseHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	if !isBitswap(pids) {
		return h.Host.NewStream(ctx, p, pids...)
	}
	if s := h.take(p, pids); s != nil {
		return s, nil
	}
	s, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil || !reusedOver[s.Conn().ConnState().Transport] {
		return s, err
	}
	r := &reusedStream{Stream: s, h: h, pids: pids}
	go r.drain(s)
	return r, nil
}

func isBitswap(pids []protocol.ID) bool {
	for _, p := range pids {
		if !strings.HasPrefix(string(p), "/ipfs/bitswap") {
			return false
		}
	}
	return len(pids) > 0
}

// take pops the most recently used idle stream to p that is still usable,
// closing the expired ones.
func (h *reuseHost) take(p peer.ID, pids []protocol.ID) *reusedStream {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.idle[p]
	var got *reusedStream
	for len(list) > 0 && got == nil {
		r := list[len(list)-1]
		list = list[:len(list)-1]
		if r.usable(time.Now()) && slices.Contains(pids, r.Protocol()) {
			got = r
			r.mu.Lock()
			r.reused = true
			r.mu.Unlock()
		} else {
			r.closeNow()
		}
	}
	if len(list) == 0 {
		delete(h.idle, p)
	} else {
		h.idle[p] = list
	}
	return got
}

// put returns r to the pool; false if it is not kept (the caller closes it).
func (h *reuseHost) put(r *reusedStream) bool {
	now := time.Now()
	if !r.usable(now) {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.swept) >= reuseIdle {
		// Peers that went away are never asked for again: drop their
		// streams here, or the map grows with every page that leaves.
		h.swept = now
		for q, l := range h.idle {
			if l = h.prune(l, now); len(l) == 0 {
				delete(h.idle, q)
			} else {
				h.idle[q] = l
			}
		}
	}
	p := r.Conn().RemotePeer()
	list := h.prune(h.idle[p], now)
	if len(list) >= reuseMax {
		h.idle[p] = list
		return false
	}
	r.mu.Lock()
	r.idleSince = now
	r.mu.Unlock()
	h.idle[p] = append(list, r)
	return true
}

// prune closes and drops the streams of list that are no longer usable.
func (h *reuseHost) prune(list []*reusedStream, now time.Time) []*reusedStream {
	return slices.DeleteFunc(list, func(o *reusedStream) bool {
		if o.usable(now) {
			return false
		}
		o.closeNow()
		return true
	})
}

// reusedStream is a bitswap stream over a browser transport that goes back to
// reuseHost's pool on Close.
type reusedStream struct {
	network.Stream // replaced only by Write, on the goroutine using it
	h              *reuseHost
	pids           []protocol.ID
	mu             sync.Mutex
	broken         bool // a write failed, a reset, or the read side failed
	reused         bool // taken from the pool: not its first message
	idleSince      time.Time
}

// drain reads s, the stream's current one, to its end: the multistream
// answer, then the end of the peer's side (a page closes its side at
// once). Reading also makes the transport answer the page's FIN, which
// Helia waits for before it reads the messages. It ends with the stream.
func (r *reusedStream) drain(s network.Stream) {
	_, err := io.Copy(io.Discard, s)
	if err != nil {
		r.mu.Lock()
		if r.Stream == s {
			r.broken = true
		}
		r.mu.Unlock()
	}
}

// usable reports whether r may carry another message: not broken, its
// connection open, not idle for reuseIdle, and not reset by the peer as
// far as the transport knows (an empty write reports a reset it has read).
func (r *reusedStream) usable(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken || r.Conn().IsClosed() || (!r.idleSince.IsZero() && now.Sub(r.idleSince) >= reuseIdle) {
		return false
	}
	if _, err := r.Stream.Write(nil); err != nil {
		r.broken = true
	}
	return !r.broken
}

// Write writes b, part of a bitswap message. If the stream came from the
// pool and the message's first write fails (the peer reset it while it was
// idle), b goes on a new stream instead, which then replaces it: a peer
// drops the part of a message cut by a reset. A later write of the same
// message that fails is not retried: the rest of a message on a new stream
// would not be a message (a message may be written in parts: the fetch
// package writes a block's data apart from its framing).
func (r *reusedStream) Write(b []byte) (int, error) {
	n, err := r.Stream.Write(b)
	if err == nil {
		r.mu.Lock()
		r.reused = false // this message has begun on this stream
		r.mu.Unlock()
		return n, nil
	}
	r.mu.Lock()
	r.broken = true
	retry := r.reused
	r.reused = false
	r.mu.Unlock()
	if !retry {
		return n, err
	}
	_ = r.Stream.Reset()
	ctx, cancel := context.WithTimeout(context.Background(), reuseIdle)
	defer cancel()
	s, err := r.h.Host.NewStream(ctx, r.Conn().RemotePeer(), r.pids...)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.Stream, r.broken = s, false
	r.mu.Unlock()
	go r.drain(s)
	n, err = s.Write(b)
	if err != nil {
		r.mu.Lock()
		r.broken = true
		r.mu.Unlock()
	}
	return n, err
}

// Close returns the stream to the pool, or closes it if it is not kept.
func (r *reusedStream) Close() error {
	if r.h.put(r) {
		return nil
	}
	return r.Stream.Close()
}

func (r *reusedStream) closeNow() { go r.Stream.Close() }

func (r *reusedStream) Reset() error {
	r.mu.Lock()
	r.broken = true
	r.mu.Unlock()
	return r.Stream.Reset()
}

// SetReadDeadline is ignored: the stream's reader is drain's, and bitswap
// sets one only to bound the close it no longer does.
func (r *reusedStream) SetReadDeadline(time.Time) error { return nil }

// SetDeadline sets the write deadline only (see SetReadDeadline).
func (r *reusedStream) SetDeadline(t time.Time) error { return r.Stream.SetWriteDeadline(t) }
