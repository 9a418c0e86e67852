package announce

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// Summary wire constants. The package documentation ("Summary request,
// version 1") describes the format they belong to.
const (
	// SummaryVersion is the summary format version this package writes and
	// reads: the first byte of a request and of an answer.
	SummaryVersion = 1

	// MaxSummarySize is the largest summary answer in bytes. A sender
	// leaves out what does not fit; a receiver stops reading past it and
	// rejects the answer.
	MaxSummarySize = 1 << 20

	// MaxSummaryHolders caps the other holders (peers other than the one
	// answering) an answer lists.
	MaxSummaryHolders = 64

	// MaxHolderAddrs caps the addresses given for one holder.
	MaxHolderAddrs = 8

	// summaryRequestSize is the exact size of a request.
	summaryRequestSize = 2
	// summaryHeaderSize is the answer's version and ttl.
	summaryHeaderSize = 3
	// maxAddrLen bounds one binary multiaddr in an answer.
	maxAddrLen = 1024
	// maxPeerIDLen bounds one binary peer ID in an answer (an Ed25519 or
	// secp256k1 identity multihash is 38 or 39 bytes, a sha2-256 one 34).
	maxPeerIDLen = 64
	// maxGroupRoots is the most roots one group carries (16-bit count).
	maxGroupRoots = 1<<16 - 1
)

// SummaryProtocol returns the libp2p stream protocol of the mesh's summary
// request: /meshcdn/<name>/summary/1.
func SummaryProtocol(name string) protocol.ID {
	return protocol.ID("/meshcdn/" + name + "/summary/1")
}

// SummaryRequest is what a peer asks of another in a summary request.
type SummaryRequest struct {
	// Others asks for the other holders the answering peer knows of (its
	// provider table), besides what it holds itself. A peer that keeps no
	// table to share answers with its own roots only.
	Others bool
}

// flag bits of a request's second byte
const summaryFlagOthers = 0x01

// EncodeSummaryRequest returns the two bytes of r.
func EncodeSummaryRequest(r SummaryRequest) []byte {
	b := []byte{SummaryVersion, 0}
	if r.Others {
		b[1] |= summaryFlagOthers
	}
	return b
}

// DecodeSummaryRequest parses a request. Unknown flag bits are ignored;
// a version other than SummaryVersion wraps ErrUnknownVersion, a request
// of other than two bytes ErrMalformed.
func DecodeSummaryRequest(b []byte) (SummaryRequest, error) {
	if len(b) != summaryRequestSize {
		return SummaryRequest{}, fmt.Errorf("%w: summary request of %d bytes, want %d", ErrMalformed, len(b), summaryRequestSize)
	}
	if b[0] != SummaryVersion {
		return SummaryRequest{}, fmt.Errorf("%w: summary request version %d", ErrUnknownVersion, b[0])
	}
	return SummaryRequest{Others: b[1]&summaryFlagOthers != 0}, nil
}

// Holder is a peer an answer says holds Roots, with Addrs it may be
// dialled at (at most MaxHolderAddrs; possibly none).
type Holder struct {
	Peer  peer.ID
	Addrs []ma.Multiaddr
	Roots []cid.Cid
}

// Summary is one decoded summary answer.
type Summary struct {
	// TTL is how long the receiver may believe it: whole seconds, 1 to
	// MaxTTLSeconds.
	TTL time.Duration
	// Own are the roots the answering peer holds.
	Own []cid.Cid
	// Others are other peers the answering peer knows to hold content (at
	// most MaxSummaryHolders), each listed once; only if asked for.
	Others []Holder
}

// EncodeSummary returns s as one answer of at most MaxSummarySize bytes.
// What does not fit is left out, in order: Own first, then Others in the
// order given (a holder whose roots do not all fit is cut short; holders
// beyond MaxSummaryHolders are left out). Roots repeated within a group
// are sent once; every root must be a CIDv1 of a sha2-256 multihash, every
// holder a valid peer ID other than the empty one; holders without roots
// are left out, and so are addresses beyond MaxHolderAddrs or longer than
// 1024 bytes.
func EncodeSummary(s Summary) ([]byte, error) {
	ttl := int64((s.TTL + time.Second - 1) / time.Second)
	if ttl < 1 || ttl > MaxTTLSeconds {
		return nil, fmt.Errorf("announce: encode summary: ttl %v out of range 1s..%ds", s.TTL, MaxTTLSeconds)
	}
	out := make([]byte, summaryHeaderSize, 512)
	out[0] = SummaryVersion
	binary.BigEndian.PutUint16(out[1:3], uint16(ttl))
	var err error
	if out, err = appendGroup(out, "", nil, s.Own); err != nil {
		return nil, err
	}
	holders := 0
	for _, h := range s.Others {
		if holders == MaxSummaryHolders || len(out) >= MaxSummarySize {
			break
		}
		if h.Peer == "" {
			return nil, fmt.Errorf("announce: encode summary: holder without a peer ID")
		}
		before := len(out)
		if out, err = appendGroup(out, h.Peer, h.Addrs, h.Roots); err != nil {
			return nil, err
		}
		if len(out) > before {
			holders++
		}
	}
	return out, nil
}

// appendGroup appends one group (p "" is the answering peer) with as many
// of roots as fit in MaxSummarySize, or nothing if none fit.
func appendGroup(out []byte, p peer.ID, addrs []ma.Multiaddr, roots []cid.Cid) ([]byte, error) {
	start := len(out)
	pb := []byte(p)
	if len(pb) > maxPeerIDLen {
		return nil, fmt.Errorf("announce: encode summary: peer ID of %d bytes", len(pb))
	}
	out = append(out, byte(len(pb)))
	out = append(out, pb...)
	var as [][]byte
	for _, a := range addrs {
		if len(as) == MaxHolderAddrs {
			break
		}
		if b := a.Bytes(); len(b) > 0 && len(b) <= maxAddrLen {
			as = append(as, b)
		}
	}
	out = append(out, byte(len(as)))
	for _, b := range as {
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	countAt := len(out)
	out = append(out, 0, 0)
	n := 0
	seen := make(map[cid.Cid]struct{}, len(roots))
	for _, r := range roots {
		if err := checkRoot(r); err != nil {
			return nil, fmt.Errorf("announce: encode summary: %w", err)
		}
		if _, dup := seen[r]; dup {
			continue
		}
		b := r.Bytes()
		if n == maxGroupRoots || len(out)+1+len(b) > MaxSummarySize {
			break
		}
		seen[r] = struct{}{}
		out = append(out, byte(len(b)))
		out = append(out, b...)
		n++
	}
	if n == 0 {
		return out[:start], nil
	}
	binary.BigEndian.PutUint16(out[countAt:], uint16(n))
	return out, nil
}

// DecodeSummary parses one answer. It never panics; every error wraps
// ErrTooLarge, ErrUnknownVersion or ErrMalformed, and an answer is accepted
// whole or not at all.
func DecodeSummary(b []byte) (Summary, error) {
	if len(b) > MaxSummarySize {
		return Summary{}, fmt.Errorf("%w: summary of %d bytes, at most %d", ErrTooLarge, len(b), MaxSummarySize)
	}
	if len(b) < 1 {
		return Summary{}, fmt.Errorf("%w: empty summary", ErrMalformed)
	}
	if b[0] != SummaryVersion {
		return Summary{}, fmt.Errorf("%w: summary version %d", ErrUnknownVersion, b[0])
	}
	if len(b) < summaryHeaderSize {
		return Summary{}, fmt.Errorf("%w: summary of %d bytes, header needs %d", ErrMalformed, len(b), summaryHeaderSize)
	}
	ttl := binary.BigEndian.Uint16(b[1:3])
	if ttl == 0 {
		return Summary{}, fmt.Errorf("%w: summary with ttl 0", ErrMalformed)
	}
	s := Summary{TTL: time.Duration(ttl) * time.Second}
	seen := make(map[peer.ID]struct{})
	rest := b[summaryHeaderSize:]
	for g := 0; len(rest) > 0; g++ {
		var h Holder
		var err error
		h, rest, err = decodeGroup(rest)
		if err != nil {
			return Summary{}, fmt.Errorf("group %d: %w", g, err)
		}
		if h.Peer == "" {
			if g != 0 {
				return Summary{}, fmt.Errorf("%w: group %d: the answering peer's own group is not first", ErrMalformed, g)
			}
			s.Own = h.Roots
			continue
		}
		if _, dup := seen[h.Peer]; dup {
			return Summary{}, fmt.Errorf("%w: group %d: holder %s listed twice", ErrMalformed, g, h.Peer)
		}
		seen[h.Peer] = struct{}{}
		if len(s.Others) == MaxSummaryHolders {
			return Summary{}, fmt.Errorf("%w: more than %d holders", ErrMalformed, MaxSummaryHolders)
		}
		s.Others = append(s.Others, h)
	}
	return s, nil
}

// decodeGroup parses one group from the front of b and returns the rest.
func decodeGroup(b []byte) (Holder, []byte, error) {
	var h Holder
	pl := int(b[0])
	if pl > maxPeerIDLen || len(b) < 1+pl+1 {
		return h, nil, fmt.Errorf("%w: bad peer ID length %d", ErrMalformed, pl)
	}
	if pl > 0 {
		id, err := peer.IDFromBytes(b[1 : 1+pl])
		if err != nil {
			return h, nil, fmt.Errorf("%w: peer ID: %v", ErrMalformed, err)
		}
		h.Peer = id
	}
	b = b[1+pl:]
	na := int(b[0])
	b = b[1:]
	if na > MaxHolderAddrs || (pl == 0 && na != 0) {
		return h, nil, fmt.Errorf("%w: %d addresses", ErrMalformed, na)
	}
	for i := 0; i < na; i++ {
		if len(b) < 2 {
			return h, nil, fmt.Errorf("%w: address %d: truncated", ErrMalformed, i)
		}
		l := int(binary.BigEndian.Uint16(b))
		if l == 0 || l > maxAddrLen || len(b) < 2+l {
			return h, nil, fmt.Errorf("%w: address %d: bad length %d", ErrMalformed, i, l)
		}
		a, err := ma.NewMultiaddrBytes(b[2 : 2+l])
		if err != nil {
			return h, nil, fmt.Errorf("%w: address %d: %v", ErrMalformed, i, err)
		}
		h.Addrs = append(h.Addrs, a)
		b = b[2+l:]
	}
	if len(b) < 2 {
		return h, nil, fmt.Errorf("%w: root count: truncated", ErrMalformed)
	}
	count := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if count == 0 || count > len(b)/2 {
		return h, nil, fmt.Errorf("%w: root count %d", ErrMalformed, count)
	}
	h.Roots = make([]cid.Cid, 0, count)
	seen := make(map[cid.Cid]struct{}, count)
	for i := 0; i < count; i++ {
		if len(b) < 1 {
			return h, nil, fmt.Errorf("%w: root %d: truncated", ErrMalformed, i)
		}
		l := int(b[0])
		if l == 0 || l > maxCIDLen || len(b) < 1+l {
			return h, nil, fmt.Errorf("%w: root %d: bad length %d", ErrMalformed, i, l)
		}
		c, err := cid.Cast(b[1 : 1+l])
		if err != nil {
			return h, nil, fmt.Errorf("%w: root %d: %v", ErrMalformed, i, err)
		}
		if err := checkRoot(c); err != nil {
			return h, nil, fmt.Errorf("root %d: %w", i, err)
		}
		b = b[1+l:]
		if _, dup := seen[c]; dup {
			continue
		}
		seen[c] = struct{}{}
		h.Roots = append(h.Roots, c)
	}
	return h, b, nil
}
