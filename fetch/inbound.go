package fetch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshcdn/meshcdn/internal/expiry"
)

// Want lists that are too large. boxo's bitswap reads any message up to
// 4 MiB and decodes it whole; 60 connections resending 2 MB want lists took
// a seed to 1.75 GiB and the honest fetch to 23x, the resource manager
// seeing a sixth of that memory. The engine keeps at most 1024 wants per
// peer, so a longer list is only work. The bitswap network here reads its
// inbound streams through inboundStream, which reads each message whole
// (its fields checked as they arrive, before their bodies are read), hands
// boxo its blocks aside (sideblocks.go) and the rest as it came, and
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
//     is read and handed on, so that the resource manager's memory limits
//     count it and refuse what does not fit.
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

// Want lists that come too often. A want list under maxWantlistBytes
// still costs boxo's engine a blockstore lookup per entry, and while the
// peer's ledger is full (1024 wants) a pass over all of it under the
// engine's one lock, which every peer's messages wait on: one peer sending
// 105 KB lists of 2,500 wants back to back, 54 a second, slowed an honest
// fetch beside it 2.8x (the process using under one core). A peer's want
// lists are handed on at wantBytesPerSecond of want-list bytes after a
// burst of wantBurst (about 24,000 wants); past that, its stream is not
// read until they are due, so that its writes wait. An honest peer's want
// lists are a few KB (a full ledger's about 43 KB).
const (
	wantBytesPerSecond = 256 << 10
	wantBurst          = 4 * maxWantlistBytes
	wantPacersPrune    = 1024 // peers held from which idle ones are forgotten
)

// wantPacer paces each peer's want lists (wantBytesPerSecond). It is safe
// for concurrent use; a nil wantPacer does not pace.
type wantPacer struct {
	mu    sync.Mutex
	peers map[peer.ID]*rate.Limiter
}

func newWantPacer() *wantPacer { return &wantPacer{peers: make(map[peer.ID]*rate.Limiter)} }

// wait waits until p may hand on n more bytes of want lists, or ctx ends.
func (w *wantPacer) wait(ctx context.Context, p peer.ID, n int) error {
	if w == nil || n == 0 {
		return nil
	}
	return w.limiter(p, time.Now()).WaitN(ctx, min(n, wantBurst))
}

// limiter returns p's limiter, made if new; past wantPacersPrune peers,
// those whose burst is whole again are forgotten first.
func (w *wantPacer) limiter(p peer.ID, now time.Time) *rate.Limiter {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.peers[p]
	if l != nil {
		return l
	}
	if len(w.peers) >= wantPacersPrune {
		for q, m := range w.peers {
			if m.TokensAt(now) >= wantBurst {
				delete(w.peers, q)
			}
		}
	}
	l = rate.NewLimiter(wantBytesPerSecond, wantBurst)
	w.peers[p] = l
	return l
}

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
	until expiry.Set[peer.ID]
}

var _ connmgr.ConnectionGater = (*Gater)(nil)

// refuse refuses p until until.
func (g *Gater) refuse(p peer.ID, until time.Time) { g.until.Add(p, until, time.Now()) }

// Refused reports whether p is refused at now.
func (g *Gater) Refused(p peer.ID, now time.Time) bool { return g.until.Has(p, now) }

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
	side     *sideBlocks // nil: blocks go through boxo's decoding
	// backlog, if set with side, holds the next block of a message back
	// while the Fetcher's store is behind (backlog.go), until done ends.
	backlog *storeBacklog
	done    context.Context
	pace    *wantPacer // nil: want lists are not paced
	inflow  *inflow    // nil: block bytes coming in are not noted
}

func (h filterHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) {
		if p := s.Conn().RemotePeer(); h.refused(p, time.Now()) {
			_ = s.Reset()
			_ = h.Network().ClosePeer(p)
			return
		}
		handler(&inboundStream{Stream: s, r: bufio.NewReaderSize(s, 4096), rejected: h.refuse, side: h.side, backlog: h.backlog, done: h.done, pace: h.pace, inflow: h.inflow})
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

// inboundStream passes a bitswap stream's messages on while checking each
// message's framing: a varint length, then top-level protobuf fields (1
// want list, 2 and 3 blocks, 4 block presences, 5 pending bytes). It reads
// each message whole before handing any of it out. With side set, it takes
// the blocks (field 3) out of the message, each read into a buffer of its
// own size, and hands boxo the rest with a marker by which the guard puts
// them back (see sideBlocks); without, the message passes byte for byte.
type inboundStream struct {
	network.Stream
	r        *bufio.Reader
	rejected func(network.Stream, error)
	side     *sideBlocks // nil: blocks pass through boxo's decoding
	backlog  *storeBacklog
	done     context.Context
	pace     *wantPacer
	inflow   *inflow

	pending  []byte // the message being handed out
	token    string // side key of the blocks of the last message handed out
	reserved int    // memory reserved for the current message
	started  bool   // a message header arrived
	err      error
}

func (s *inboundStream) Read(p []byte) (int, error) {
	if len(s.pending) == 0 {
		// boxo asks for the next message: it has handled the last one.
		s.dropSide()
		if s.err != nil {
			return 0, s.err
		}
		if err := s.message(); err != nil {
			s.fail(err)
			return 0, err
		}
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	if len(s.pending) == 0 {
		s.release() // boxo has read it: what it allocated for it is its own
	}
	return n, nil
}

// Close and Reset let go of blocks taken out of a message boxo did not
// hand on.
func (s *inboundStream) Close() error { s.dropSide(); return s.Stream.Close() }
func (s *inboundStream) Reset() error { s.dropSide(); return s.Stream.Reset() }

func (s *inboundStream) dropSide() {
	if s.token != "" {
		s.side.take(s.token)
		s.token = ""
	}
}

// message reads the next message whole into pending. Its length goes out
// only once all of it is read and checked: boxo allocates the whole
// message when it reads the length, so a message refused at any field
// costs boxo no allocation.
func (s *inboundStream) message() error {
	l, err := s.messageHeader()
	if err != nil {
		return err
	}
	var out, blks = []byte{}, []blocks.Block(nil)
	wantBytes := 0
	for left := int(l); left > 0; {
		field, n, err := s.field(&out, left, &wantBytes)
		if err != nil {
			return err
		}
		left -= n
		if field == nil {
			continue
		}
		b, err := payloadBlock(field)
		if err != nil {
			return fmt.Errorf("%w: %v", errTooLarge, err)
		}
		blks = append(blks, b)
	}
	if s.pace != nil && wantBytes > 0 {
		if err := s.pace.wait(s.ctx(), s.Conn().RemotePeer(), wantBytes); err != nil {
			return err
		}
	}
	if len(blks) > 0 {
		s.token = s.side.put(blks)
		out = appendMarker(out, s.token)
	}
	s.pending = append(protowire.AppendVarint(make([]byte, 0, 10+len(out)), uint64(len(out))), out...)
	return nil
}

// ctx is the Fetcher's context (done), or the background one.
func (s *inboundStream) ctx() context.Context {
	if s.done == nil {
		return context.Background()
	}
	return s.done
}

// messageHeader reads a message's length, sets its read deadline and
// reserves its size with the stream's scope.
func (s *inboundStream) messageHeader() (uint64, error) {
	wait := streamIdle
	if !s.started {
		wait = firstMessageWait
	}
	_ = s.SetReadDeadline(time.Now().Add(wait))
	var hdr []byte
	l, err := s.varint(&hdr)
	var ne net.Error
	if err != nil && !s.started && len(hdr) == 0 && errors.As(err, &ne) && ne.Timeout() {
		return 0, fmt.Errorf("%w: no message in %v: %v", errSilent, wait, err)
	}
	if err != nil {
		return 0, err
	}
	s.started = true
	_ = s.SetReadDeadline(time.Now().Add(sendDeadline(int(min(l, maxMessageBytes)))))
	if l > maxMessageBytes {
		return 0, fmt.Errorf("%w: message of %d bytes", errTooLarge, l)
	}
	if l > 0 {
		if err := s.Scope().ReserveMemory(int(l), network.ReservationPriorityAlways); err != nil {
			return 0, fmt.Errorf("%w: %d bytes: %v", errNoMemory, l, err)
		}
		s.reserved = int(l)
	}
	return l, nil
}

// field reads one field of at most left bytes, checking the want list's
// size so far (counted in wantBytes) before its body is read. A block
// (field 3) taken out of the message (side set) is returned, read into a
// buffer of its size; any other field is appended to out as it came. n is
// the field's size.
func (s *inboundStream) field(out *[]byte, left int, wantBytes *int) (block []byte, n int, err error) {
	mark := len(*out)
	tag, err := s.varint(out)
	if err != nil {
		return nil, 0, err
	}
	body := 0
	switch tag & 7 {
	case 0:
		_, err = s.varint(out)
	case 1:
		body = 8
	case 5:
		body = 4
	case 2:
		var l uint64
		if l, err = s.varint(out); err == nil {
			body = int(min(l, maxMessageBytes+1))
			if tag>>3 == 1 {
				*wantBytes += body
			}
		}
	default:
		err = fmt.Errorf("%w: bad wire type %d", errTooLarge, tag&7)
	}
	if err != nil {
		return nil, 0, err
	}
	if *wantBytes > maxWantlistBytes {
		return nil, 0, fmt.Errorf("%w: want list of %d bytes", errTooLarge, *wantBytes)
	}
	n = len(*out) - mark + body
	if n > left {
		return nil, 0, fmt.Errorf("%w: field past its message", errTooLarge)
	}
	if tag == 3<<3|2 && s.side != nil {
		*out = (*out)[:mark] // the header goes with the block
		if s.backlog != nil {
			s.backlog.wait(s.done, body, storeBacklogWait)
		}
		block = make([]byte, body)
		return block, n, readNoting(s.r, block, s.inflow, s.sender())
	}
	*out = slices.Grow(*out, body)
	if tag == 3<<3|2 {
		err = readNoting(s.r, (*out)[len(*out):len(*out)+body], s.inflow, s.sender())
	} else {
		_, err = io.ReadFull(s.r, (*out)[len(*out):len(*out)+body])
	}
	*out = (*out)[:len(*out)+body]
	return nil, n, err
}

// sender is the peer whose block bytes readNoting notes: the stream's
// remote peer, or none when nothing notes them.
func (s *inboundStream) sender() peer.ID {
	if s.inflow == nil {
		return ""
	}
	return s.Conn().RemotePeer()
}

// varint reads a varint, appending its bytes to out.
func (s *inboundStream) varint(out *[]byte) (uint64, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		b, err := s.r.ReadByte()
		if err != nil {
			return 0, err
		}
		*out = append(*out, b)
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
	s.dropSide()
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
