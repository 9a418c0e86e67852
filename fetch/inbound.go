package fetch

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// Want lists that are too large. boxo's bitswap reads any message up to
// 4 MiB and decodes it whole; 60 connections resending 2 MB want lists took
// a seed to 1.75 GiB and the honest fetch to 23x, the resource manager
// seeing a sixth of that memory. The engine keeps at most 1024 wants per
// peer, so a longer list is only work. The bitswap network here reads its
// inbound streams through inboundStream, which follows each message's
// protobuf framing as the bytes pass (nothing is buffered but a few
// header bytes) and
//
//   - resets the stream at a message whose want list is over
//     maxWantlistBytes (about 2,900 entries), before boxo decodes it;
//   - closes a stream idle for streamIdle between messages, and one whose
//     message does not arrive at minSendRate;
//   - resets a stream that brings no message within firstMessageWait, and
//     refuses (below) a peer with silentStrikes such streams within
//     refuseFor. boxo writes a message on each stream as soon as it opens
//     it, except at times on its one want stream per peer (opened before a
//     want list that can come out empty): a silent stream now and then is
//     honest, a handful at once is a peer holding streams. 64 keys each
//     holding the per-peer maximum of 64 silent bitswap streams filled the
//     protocol's 4096 (4 per MaxConns) and locked every new peer out of
//     bitswap for as long as they kept them (streamIdle, then again); now
//     each such peer holds them for firstMessageWait and is then refused;
//   - reserves each message's size with the stream's resource scope while it
//     is read (what boxo then allocates for it), so that the resource
//     manager's memory limits count it and refuse what does not fit.
//
// A peer that sends a message over the limits (or malformed) breaks the
// protocol as no honest bitswap does: its connections are closed at once
// and, for refuseFor, its bitswap streams are reset as they arrive, before
// a byte of them is read. Resetting the stream alone left the peer its
// connection to open the next one on: 8 such peers, each sending its next
// 2 MB want list as soon as the last was refused, had the seed take in
// (and decrypt) a yamux window of each, about 30 a second, and slowed an
// honest fetch beside them 2.2-5x. Closing its connections alone still
// let a refused peer dial again at once (go-libp2p exempts loopback from
// its connection rate limit) and have the seed take in its next message's
// first window; with the Fetcher's Gater as the host's connection gater
// (mesh does this), the peer's new connections are refused after their
// security handshake for as long as it is refused.
const (
	streamIdle       = 2 * time.Minute
	maxWantlistBytes = 128 << 10
	maxMessageBytes  = network.MessageSizeMax // boxo's own cap: 4 MiB
	refuseFor        = time.Minute
	firstMessageWait = 10 * time.Second
	silentStrikes    = 4
)

// silentKey is the peerstore key under which a host counts a peer's silent
// streams (a *silentCount).
const silentKey = "meshcdn/fetch/silent-streams"

// Gater keeps the peers a Fetcher refuses: one that sent a bitswap message
// over the limits or malformed, or left too many bitswap streams silent, is
// refused for a minute (see the Want lists comment in inbound.go). The
// Fetcher closes a refused peer's connections and resets its bitswap
// streams unread; a Gater that is also the host's connection gater
// (libp2p.ConnectionGater) refuses the peer's new connections, inbound and
// outbound, after their security handshake, so that it cannot dial again
// at once (go-libp2p exempts loopback and allowlisted addresses from its
// connection rate limit) and have the seed take in a stream window of its
// next message each time.
//
// The zero value is ready to use; a Gater is safe for concurrent use. It
// holds an entry per refused peer while it is refused.
type Gater struct {
	mu        sync.Mutex
	until     map[peer.ID]time.Time
	nextPrune int
}

var _ connmgr.ConnectionGater = (*Gater)(nil)

// gaterPruneAt is the number of refusals held from which a Gater forgets
// the expired ones.
const gaterPruneAt = 256

// refuse refuses p until until.
func (g *Gater) refuse(p peer.ID, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.until == nil {
		g.until = make(map[peer.ID]time.Time)
	}
	if len(g.until) >= max(g.nextPrune, gaterPruneAt) {
		now := time.Now()
		for q, u := range g.until {
			if !now.Before(u) {
				delete(g.until, q)
			}
		}
		g.nextPrune = 2 * len(g.until)
	}
	g.until[p] = until
}

// Refused reports whether p is refused at now.
func (g *Gater) Refused(p peer.ID, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.until[p]
	return ok && now.Before(until)
}

// InterceptPeerDial refuses dialling a refused peer.
func (g *Gater) InterceptPeerDial(p peer.ID) bool { return !g.Refused(p, time.Now()) }

// InterceptAddrDial allows every address: peers are judged by ID.
func (g *Gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

// InterceptAccept allows every connection until its peer is known.
func (g *Gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses a connection, either way, with a refused peer.
func (g *Gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.Refused(p, time.Now())
}

// InterceptUpgraded allows every connection that got this far.
func (g *Gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// silentCount counts a peer's streams reset for bringing no message, over
// a window of refuseFor.
type silentCount struct {
	mu    sync.Mutex
	n     int
	since time.Time
}

// add counts one at now and reports whether the peer is at silentStrikes.
func (c *silentCount) add(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.since) > refuseFor {
		c.n, c.since = 0, now
	}
	c.n++
	return c.n >= silentStrikes
}

// errTooLarge is what reading a bitswap message over the limits, or
// malformed, fails with, and errSilent what a new stream without a message
// within firstMessageWait fails with: the peer is refused. errNoMemory is
// what it fails with when the resource manager has no room for a message:
// the stream is reset, the peer (not at fault) is not refused.
var (
	errTooLarge = errors.New("fetch: bitswap message over the limits")
	errSilent   = errors.New("fetch: bitswap stream left silent")
	errNoMemory = errors.New("fetch: no memory for a bitswap message")
)

// filterHost is the host bitswap's network is built on: the handlers it
// sets read their streams through inboundStream, and reset those of
// refused peers unread. rejected, if set, is told of each refusal.
type filterHost struct {
	host.Host
	gate     *Gater
	rejected func(network.Stream, error)
}

func (h filterHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) {
		if p := s.Conn().RemotePeer(); h.refused(p, time.Now()) {
			_ = s.Reset()
			_ = h.Network().ClosePeer(p)
			return
		}
		handler(&inboundStream{Stream: s, r: bufio.NewReaderSize(s, 4096), rejected: h.refuse})
	})
}

// refuse closes the connections of the peer that sent s a message over
// the limits, or left silentStrikes streams silent, and refuses its
// streams for refuseFor.
func (h filterHost) refuse(s network.Stream, err error) {
	p := s.Conn().RemotePeer()
	if errors.Is(err, errSilent) && !h.silentCounter(p).add(time.Now()) {
		return
	}
	h.gate.refuse(p, time.Now().Add(refuseFor))
	if h.rejected != nil {
		h.rejected(s, err)
	}
	_ = h.Network().ClosePeer(p)
}

// silentCounter returns p's silentCount, made on first use. Two streams
// of p timing out at once may each make one: a count lost, no more.
func (h filterHost) silentCounter(p peer.ID) *silentCount {
	if v, err := h.Peerstore().Get(p, silentKey); err == nil {
		if c, ok := v.(*silentCount); ok {
			return c
		}
	}
	c := &silentCount{}
	_ = h.Peerstore().Put(p, silentKey, c)
	return c
}

// refused reports whether p's streams are refused at now.
func (h filterHost) refused(p peer.ID, now time.Time) bool { return h.gate.Refused(p, now) }

// inboundStream passes a bitswap stream's bytes through while checking
// each message's framing: a varint length, then top-level protobuf fields
// (1 want list, 2 and 3 blocks, 4 block presences, 5 pending bytes).
type inboundStream struct {
	network.Stream
	r        *bufio.Reader
	rejected func(network.Stream, error)

	pending   []byte // header bytes parsed, not yet handed out
	frameLeft int    // bytes of the current message not yet handed out
	fieldLeft int    // bytes of the current field's body not yet handed out
	wantBytes int    // want list bytes in the current message
	reserved  int    // memory reserved for the current message
	started   bool   // a message header arrived
	err       error
}

func (s *inboundStream) Read(p []byte) (int, error) {
	for len(s.pending) == 0 && s.fieldLeft == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if err := s.header(); err != nil {
			s.fail(err)
			return 0, err
		}
	}
	if len(s.pending) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		return n, nil
	}
	n, err := s.r.Read(p[:min(len(p), s.fieldLeft)])
	s.fieldLeft -= n
	s.frameLeft -= n
	if s.frameLeft == 0 {
		s.release()
	}
	return n, err
}

// header parses the next message or field header into pending. A
// message's length goes out only with its first field's header: boxo
// allocates the whole message when it reads the length, so a message
// refused at its first field (a want list comes first) costs no allocation.
func (s *inboundStream) header() error {
	if s.frameLeft == 0 {
		if err := s.messageHeader(); err != nil || s.frameLeft == 0 {
			return err
		}
	}
	return s.fieldHeader()
}

// messageHeader parses a message's length, sets its read deadline and
// reserves its size with the stream's scope.
func (s *inboundStream) messageHeader() error {
	wait := streamIdle
	if !s.started {
		wait = firstMessageWait
	}
	_ = s.SetReadDeadline(time.Now().Add(wait))
	l, err := s.varint()
	var ne net.Error
	if err != nil && !s.started && len(s.pending) == 0 && errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: no message in %v: %v", errSilent, wait, err)
	}
	if err != nil {
		return err
	}
	s.started = true
	_ = s.SetReadDeadline(time.Now().Add(sendDeadline(int(min(l, maxMessageBytes)))))
	if l > maxMessageBytes {
		return fmt.Errorf("%w: message of %d bytes", errTooLarge, l)
	}
	if l > 0 {
		if err := s.Scope().ReserveMemory(int(l), network.ReservationPriorityAlways); err != nil {
			return fmt.Errorf("%w: %v", errTooLarge, err)
		}
		s.reserved = int(l)
	}
	s.frameLeft, s.wantBytes = int(l), 0
	return nil
}

// fieldHeader parses a field's tag (and length) and checks the want list's
// size so far.
func (s *inboundStream) fieldHeader() error {
	mark := len(s.pending)
	tag, err := s.varint()
	if err != nil {
		return err
	}
	switch tag & 7 {
	case 0:
		_, err = s.varint()
	case 1:
		s.fieldLeft = 8
	case 5:
		s.fieldLeft = 4
	case 2:
		var l uint64
		if l, err = s.varint(); err == nil {
			s.fieldLeft = int(min(l, maxMessageBytes+1))
			if tag>>3 == 1 {
				s.wantBytes += s.fieldLeft
			}
		}
	default:
		err = fmt.Errorf("%w: bad wire type %d", errTooLarge, tag&7)
	}
	if err != nil {
		return err
	}
	if s.wantBytes > maxWantlistBytes {
		return fmt.Errorf("%w: want list of %d bytes", errTooLarge, s.wantBytes)
	}
	s.frameLeft -= len(s.pending) - mark
	if s.frameLeft < s.fieldLeft || s.frameLeft < 0 {
		return fmt.Errorf("%w: field past its message", errTooLarge)
	}
	if s.frameLeft == 0 {
		s.release()
	}
	return nil
}

// varint reads a varint, appending its bytes to pending.
func (s *inboundStream) varint() (uint64, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		b, err := s.r.ReadByte()
		if err != nil {
			return 0, err
		}
		s.pending = append(s.pending, b)
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: bad varint", errTooLarge)
}

func (s *inboundStream) release() {
	if s.reserved > 0 {
		s.Scope().ReleaseMemory(s.reserved)
		s.reserved = 0
	}
}

// fail ends the stream: over the limits it is reset and its peer refused;
// without memory for the message it is reset.
func (s *inboundStream) fail(err error) {
	s.err = err
	s.pending = nil
	s.release()
	switch {
	case errors.Is(err, errTooLarge), errors.Is(err, errSilent):
		_ = s.Stream.Reset()
		if s.rejected != nil {
			s.rejected(s.Stream, err)
		}
	case errors.Is(err, errNoMemory):
		_ = s.Stream.Reset()
	}
}
