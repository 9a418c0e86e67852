package announce

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
)

// Wire constants. The package documentation describes the format they
// belong to.
const (
	// Version is the format version of HAVE and DROP messages, which
	// every peer reads.
	Version = 1

	// VersionFetch is the format version of FETCH messages: version 1's
	// layout with kind Fetch. A peer that reads only version 1 ignores
	// them (an unknown version is never penalised), so fetch
	// announcements cost old peers nothing and HAVE and DROP stay
	// readable by all.
	VersionFetch = 2

	// VersionAddrs is the format version of ADDRS messages, which say
	// where their author can be dialled (see EncodeAddrs). A peer that
	// reads only versions 1 and 2 ignores them.
	VersionAddrs = 3

	// MaxAddrs is the most addresses one ADDRS message carries.
	MaxAddrs = 8

	// MaxMessageSize is the largest message in bytes, header included.
	// Larger messages are rejected unread.
	MaxMessageSize = 16 << 10

	// MaxTTLSeconds is the largest validity a HAVE can carry: 65535 s, a
	// little over 18 hours (the field has 16 bits).
	MaxTTLSeconds = 1<<16 - 1

	headerSize = 6
	// maxCIDLen bounds one encoded root. A CIDv1 of a sha2-256 multihash is
	// 36 bytes with a one-byte codec (raw 0x55, dag-pb 0x70) and at most 44
	// with the longest codec varint.
	maxCIDLen = 64
)

// Kind is what a message says about its roots.
type Kind byte

const (
	// Have says the sender holds the roots and will say so again, or send
	// DROP, within the message's TTL.
	Have Kind = 1
	// Drop says the sender no longer holds the roots.
	Drop Kind = 2
	// Fetch says the sender has started to fetch the roots (from the
	// origin) and serves their blocks as they arrive: a partial holder,
	// until it sends HAVE (held whole) or DROP (abandoned), or the TTL
	// runs out. Sent as version VersionFetch.
	Fetch Kind = 3
	// Addrs says where the sender can be dialled: the message carries
	// multiaddrs instead of roots. Sent as version VersionAddrs.
	Addrs Kind = 4
)

// String returns "HAVE", "DROP", "FETCH" or "Kind(n)".
func (k Kind) String() string {
	switch k {
	case Have:
		return "HAVE"
	case Drop:
		return "DROP"
	case Fetch:
		return "FETCH"
	case Addrs:
		return "ADDRS"
	}
	return fmt.Sprintf("Kind(%d)", byte(k))
}

// Message is one decoded announce message. The sender is not part of it: it
// is the gossipsub author, whose peer key signs the pubsub envelope.
type Message struct {
	Kind Kind
	// TTL is how long a HAVE or FETCH stays valid: whole seconds, 1 to
	// MaxTTLSeconds. Zero for DROP.
	TTL time.Duration
	// Roots are the content roots, CIDv1 with sha2-256 multihashes, in the
	// order sent, without duplicates. None in an ADDRS.
	Roots []cid.Cid
	// Addrs are the sender's addresses, in the order sent: only in an
	// ADDRS, whose TTL says how long they may be dialled.
	Addrs []ma.Multiaddr
}

// checkRoot reports whether c may appear in a message.
func checkRoot(c cid.Cid) error {
	if !c.Defined() || c.Version() != 1 {
		return fmt.Errorf("%w: root %s: not a CIDv1", ErrMalformed, c)
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return fmt.Errorf("%w: root: %v", ErrMalformed, err)
	}
	if d.Code != mh.SHA2_256 || d.Length != 32 {
		return fmt.Errorf("%w: root %s: multihash is not sha2-256", ErrMalformed, c)
	}
	if c.ByteLen() > maxCIDLen {
		return fmt.Errorf("%w: root %s: longer than %d bytes", ErrMalformed, c, maxCIDLen)
	}
	return nil
}

// Encode returns the roots as one or more messages of kind k, each at most
// MaxMessageSize bytes, in order: version Version for HAVE and DROP,
// VersionFetch for FETCH. A HAVE's or FETCH's ttl is rounded up to whole
// seconds and must be 1 s to MaxTTLSeconds; a DROP's ttl must be zero.
// Duplicate roots are sent once. No roots give no messages.
func Encode(k Kind, ttl time.Duration, roots []cid.Cid) ([][]byte, error) {
	var ttlSec int64
	version := byte(Version)
	switch k {
	case Have, Fetch:
		ttlSec = int64((ttl + time.Second - 1) / time.Second)
		if ttlSec < 1 || ttlSec > MaxTTLSeconds {
			return nil, fmt.Errorf("announce: encode: %v ttl %v out of range 1s..%ds", k, ttl, MaxTTLSeconds)
		}
		if k == Fetch {
			version = VersionFetch
		}
	case Drop:
		if ttl != 0 {
			return nil, fmt.Errorf("announce: encode: DROP with ttl %v, want 0", ttl)
		}
	default:
		return nil, fmt.Errorf("announce: encode: unknown kind %v", k)
	}
	var out [][]byte
	var cur []byte
	n := 0
	seen := make(map[cid.Cid]struct{}, len(roots))
	flush := func() {
		if n > 0 {
			binary.BigEndian.PutUint16(cur[4:6], uint16(n))
			out = append(out, cur)
		}
		cur, n = nil, 0
	}
	for _, r := range roots {
		if err := checkRoot(r); err != nil {
			return nil, fmt.Errorf("announce: encode: %w", err)
		}
		if _, dup := seen[r]; dup {
			continue
		}
		seen[r] = struct{}{}
		b := r.Bytes()
		if cur != nil && len(cur)+1+len(b) > MaxMessageSize {
			flush()
		}
		if cur == nil {
			cur = make([]byte, headerSize, 512)
			cur[0] = version
			cur[1] = byte(k)
			binary.BigEndian.PutUint16(cur[2:4], uint16(ttlSec))
		}
		cur = append(cur, byte(len(b)))
		cur = append(cur, b...)
		n++
	}
	flush()
	return out, nil
}

// Decode parses one message. It never panics; every error wraps
// ErrTooLarge, ErrUnknownVersion or ErrMalformed. A message is accepted
// whole or not at all.
func Decode(b []byte) (Message, error) {
	if len(b) > MaxMessageSize {
		return Message{}, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(b), MaxMessageSize)
	}
	if len(b) < 1 {
		return Message{}, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if b[0] == VersionAddrs {
		return decodeAddrs(b)
	}
	if b[0] != Version && b[0] != VersionFetch {
		return Message{}, fmt.Errorf("%w: %d", ErrUnknownVersion, b[0])
	}
	if len(b) < headerSize {
		return Message{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrMalformed, len(b), headerSize)
	}
	m := Message{Kind: Kind(b[1])}
	if (m.Kind == Fetch) != (b[0] == VersionFetch) {
		return Message{}, fmt.Errorf("%w: kind %d in version %d", ErrMalformed, b[1], b[0])
	}
	ttl := binary.BigEndian.Uint16(b[2:4])
	switch m.Kind {
	case Have, Fetch:
		if ttl == 0 {
			return Message{}, fmt.Errorf("%w: %v with ttl 0", ErrMalformed, m.Kind)
		}
		m.TTL = time.Duration(ttl) * time.Second
	case Drop:
		if ttl != 0 {
			return Message{}, fmt.Errorf("%w: DROP with ttl %d, want 0", ErrMalformed, ttl)
		}
	default:
		return Message{}, fmt.Errorf("%w: unknown kind %d", ErrMalformed, b[1])
	}
	count := int(binary.BigEndian.Uint16(b[4:6]))
	if count == 0 {
		return Message{}, fmt.Errorf("%w: no roots", ErrMalformed)
	}
	// Every root takes at least two bytes: a cheap bound before allocating.
	if count > (len(b)-headerSize)/2 {
		return Message{}, fmt.Errorf("%w: count %d does not fit in %d bytes", ErrMalformed, count, len(b))
	}
	m.Roots = make([]cid.Cid, 0, count)
	seen := make(map[cid.Cid]struct{}, count)
	rest := b[headerSize:]
	for i := 0; i < count; i++ {
		if len(rest) < 1 {
			return Message{}, fmt.Errorf("%w: root %d: truncated", ErrMalformed, i)
		}
		l := int(rest[0])
		if l == 0 || l > maxCIDLen || len(rest) < 1+l {
			return Message{}, fmt.Errorf("%w: root %d: bad length %d", ErrMalformed, i, l)
		}
		c, err := cid.Cast(rest[1 : 1+l])
		if err != nil {
			return Message{}, fmt.Errorf("%w: root %d: %v", ErrMalformed, i, err)
		}
		if err := checkRoot(c); err != nil {
			return Message{}, fmt.Errorf("root %d: %w", i, err)
		}
		rest = rest[1+l:]
		if _, dup := seen[c]; dup {
			continue
		}
		seen[c] = struct{}{}
		m.Roots = append(m.Roots, c)
	}
	if len(rest) != 0 {
		return Message{}, fmt.Errorf("%w: %d bytes after the last root", ErrMalformed, len(rest))
	}
	return m, nil
}

// maxAddrBytes bounds one binary multiaddr in an ADDRS message.
const maxAddrBytes = 1024

// EncodeAddrs returns an ADDRS message (version VersionAddrs) saying that
// its author can be dialled at addrs for ttl (rounded up to whole seconds,
// 1 s to MaxTTLSeconds): the first MaxAddrs addresses, each at most 1024
// bytes in binary form, duplicates sent once. It fails if no address is
// left.
func EncodeAddrs(ttl time.Duration, addrs []ma.Multiaddr) ([]byte, error) {
	ttlSec := int64((ttl + time.Second - 1) / time.Second)
	if ttlSec < 1 || ttlSec > MaxTTLSeconds {
		return nil, fmt.Errorf("announce: encode: ADDRS ttl %v out of range 1s..%ds", ttl, MaxTTLSeconds)
	}
	out := make([]byte, headerSize, 256)
	out[0], out[1] = VersionAddrs, byte(Addrs)
	binary.BigEndian.PutUint16(out[2:4], uint16(ttlSec))
	var sent [][]byte
	for _, a := range addrs {
		b := a.Bytes()
		if len(sent) == MaxAddrs || len(b) == 0 || len(b) > maxAddrBytes ||
			slices.ContainsFunc(sent, func(s []byte) bool { return string(s) == string(b) }) {
			continue
		}
		sent = append(sent, b)
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	if len(sent) == 0 {
		return nil, fmt.Errorf("announce: encode: ADDRS without an address")
	}
	binary.BigEndian.PutUint16(out[4:6], uint16(len(sent)))
	return out, nil
}

// decodeAddrs parses an ADDRS message (version VersionAddrs), whose size
// Decode has checked.
func decodeAddrs(b []byte) (Message, error) {
	if len(b) < headerSize {
		return Message{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrMalformed, len(b), headerSize)
	}
	if Kind(b[1]) != Addrs {
		// A kind added to version 3 later: ignored, like a newer version.
		return Message{}, fmt.Errorf("%w: %d with kind %d", ErrUnknownVersion, b[0], b[1])
	}
	ttl := binary.BigEndian.Uint16(b[2:4])
	if ttl == 0 {
		return Message{}, fmt.Errorf("%w: ADDRS with ttl 0", ErrMalformed)
	}
	count := int(binary.BigEndian.Uint16(b[4:6]))
	if count == 0 || count > MaxAddrs {
		return Message{}, fmt.Errorf("%w: %d addresses, want 1..%d", ErrMalformed, count, MaxAddrs)
	}
	m := Message{Kind: Addrs, TTL: time.Duration(ttl) * time.Second, Addrs: make([]ma.Multiaddr, 0, count)}
	rest := b[headerSize:]
	for i := range count {
		if len(rest) < 2 {
			return Message{}, fmt.Errorf("%w: address %d: truncated", ErrMalformed, i)
		}
		l := int(binary.BigEndian.Uint16(rest))
		if l == 0 || l > maxAddrBytes || len(rest) < 2+l {
			return Message{}, fmt.Errorf("%w: address %d: bad length %d", ErrMalformed, i, l)
		}
		a, err := ma.NewMultiaddrBytes(rest[2 : 2+l])
		if err != nil {
			return Message{}, fmt.Errorf("%w: address %d: %v", ErrMalformed, i, err)
		}
		m.Addrs = append(m.Addrs, a)
		rest = rest[2+l:]
	}
	if len(rest) != 0 {
		return Message{}, fmt.Errorf("%w: %d bytes after the last address", ErrMalformed, len(rest))
	}
	return m, nil
}
